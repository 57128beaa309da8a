"""Read and validate manifests as they arrive, from any fsspec URL.

CSV, TSV or JSONL, plain or compressed (``.gz``, ``.zst``: decompressed with pyarrow's codecs,
so no extra dependency), a Parquet file, or a folder or glob of Parquet part files (how
warehouse exports arrive). A manifest that cannot be read at all raises ``ManifestError``
naming the file; a bad row becomes an invalid ``ManifestRow`` with a reason, and the other rows
proceed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import fsspec
import pandas as pd
import pyarrow as pa

from tasks.errors import ErrorCode, ManifestError
from tasks.storage.store import redact_url, s3_options

SCHEMES = ("http", "https", "s3", "file")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
WEB_HOST = re.compile(r"^(www\.|[a-z0-9-]+\.(com|net|org|io|co|tv)/)", re.IGNORECASE)
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
PARTS = "parquet_parts"  # a folder or glob of Parquet part files
GLOB = re.compile(r"[*?\[]")


@dataclass
class ManifestRow:
    """One manifest row: ``row`` is 1-based in file order; ``error`` set means invalid."""

    row: int
    id: str
    video_url: str
    overrides: dict[str, Any] = field(default_factory=dict)
    error_code: ErrorCode | None = None
    error: str | None = None
    id_given: bool = True  # False: ``id`` is the row number, the manifest had none


@dataclass
class Manifest:
    url: str
    rows: list[ManifestRow]
    ignored_columns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ManifestForm:
    """How a manifest URL is read: ``kind`` (csv, tsv, jsonl, parquet or parquet_parts) and the
    compression of its bytes (gzip, zstd or None)."""

    kind: str
    compression: str | None = None


def _is_glob(url: str) -> bool:
    """A glob pattern, except in http(s) URLs, where ``?`` starts a query."""
    parts = urlsplit(url)
    return parts.scheme not in ("http", "https") and bool(GLOB.search(parts.path))


def manifest_form(url: str) -> ManifestForm | None:
    """The form ``url``'s name says; None for a name without an extension (maybe a folder).

    Raises ``ManifestError`` for an extension matteflow does not read.
    """
    path = urlsplit(url).path
    if _is_glob(url) or path.endswith("/"):
        return ManifestForm(PARTS)
    suffixes = [x.lower() for x in PurePosixPath(path).suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    if not suffix:
        return None
    kind = FORMATS.get(suffix)
    if kind is None or (kind == "parquet" and compression):
        shown = "".join(PurePosixPath(path).suffixes[-2:]) or suffix
        raise ManifestError(
            f"manifest {redact_url(url)}: unknown extension {shown!r}; use .csv, .tsv, .jsonl "
            "(each may end in .gz or .zst), .parquet, or a folder or glob of .parquet files",
            code=ErrorCode.manifest_format,
        )
    return ManifestForm(kind, compression)


# A record, or the reason its line could not be read (the row is then invalid, not the file).
Record = tuple[dict[str, Any], str | None]
DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def _options(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    if storage_options is not None:
        return storage_options
    return s3_options() if url.startswith("s3://") else {}


def _decompress(url: str, raw: bytes, compression: str) -> bytes:
    try:
        stream = pa.CompressedInputStream(pa.py_buffer(raw), compression)
        return bytes(stream.read())
    except (OSError, ValueError) as exc:
        raise ManifestError(
            f"manifest {redact_url(url)} cannot be decompressed as {compression}: {exc}",
            code=ErrorCode.manifest_parse,
        ) from exc


def _read_raw(url: str, storage_options: dict[str, Any] | None) -> bytes:
    options = _options(url, storage_options)
    try:
        with fsspec.open(url, "rb", **options) as fh:
            raw: bytes = fh.read()
    except FileNotFoundError as exc:
        raise ManifestError(
            f"manifest {redact_url(url)} not found", code=ErrorCode.manifest_not_found
        ) from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(
            f"manifest {redact_url(url)} cannot be opened: {type(exc).__name__}: {exc}",
            code=ErrorCode.manifest_unreadable,
        ) from exc
    if not raw.strip():
        raise ManifestError(f"manifest {redact_url(url)} is empty", code=ErrorCode.manifest_empty)
    return raw


def _text(url: str, raw: bytes) -> str:
    """UTF-8 (with or without a BOM), or UTF-16 with a BOM as spreadsheets save "Unicode text"."""
    try:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"manifest {redact_url(url)} is not UTF-8 text (byte {exc.start}); save it as UTF-8",
            code=ErrorCode.manifest_encoding,
        ) from exc


def _check_header(url: str, columns: list[str], first_line: str) -> None:
    """A header without ``video_url`` is explained: another delimiter, or a missing column."""
    if "video_url" in columns:
        dupes = sorted({c for c in columns if columns.count(c) > 1 and c})
        if dupes:
            raise ManifestError(
                f"manifest {redact_url(url)} has duplicate columns: {', '.join(dupes)}",
                code=ErrorCode.manifest_duplicate_columns,
            )
        return
    for sep, name in DELIMITERS.items():
        if "video_url" in [c.strip().strip('"') for c in first_line.split(sep)]:
            raise ManifestError(
                f"manifest {redact_url(url)} looks {name}-separated ({first_line[:80]!r}); "
                "matteflow reads comma-separated CSV: save it with commas (or as JSONL)",
                code=ErrorCode.manifest_delimiter,
            )
    raise ManifestError(
        f"manifest {redact_url(url)} has no 'video_url' column "
        f"(columns: {', '.join(columns)[:200] or 'none'})",
        code=ErrorCode.manifest_no_video_url,
    )


def _csv_records(url: str, text: str, delimiter: str = ",") -> tuple[list[str], Iterator[Record]]:
    """Rows streamed from the text: a line with too many fields is a bad row, not a bad file."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise ManifestError(
            f"manifest {redact_url(url)} has no header line", code=ErrorCode.manifest_parse
        ) from exc
    columns = [c.strip() for c in header]
    _check_header(url, columns, text.split("\n", 1)[0] if delimiter == "," else "")

    def records() -> Iterator[Record]:
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield {}, f"line {reader.line_num} cannot be parsed as CSV: {exc}"
                continue
            if not any(f.strip() for f in fields):
                continue  # blank lines are not rows
            record = dict(zip(columns, fields, strict=False))
            if len(fields) > len(columns):
                yield (
                    record,
                    (
                        f"line {reader.line_num} has {len(fields)} fields but the header has "
                        f"{len(columns)} (an unquoted comma?)"
                    ),
                )
            else:
                yield record, None

    return columns, records()


def _jsonl_records(url: str, text: str) -> tuple[list[str], Iterator[Record]]:
    """One JSON object a line; a line that is not one is a bad row, not a bad file."""
    records: list[Record] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            records.append(({}, f"line {number} is not valid JSON: {exc.msg}"))
            continue
        if not isinstance(value, dict):
            records.append(({}, f"line {number} is a JSON {type(value).__name__}, not an object"))
            continue
        columns.update(dict.fromkeys(str(k).strip() for k in value))
        records.append(({str(k).strip(): v for k, v in value.items()}, None))
    if not any(error is None for _, error in records):
        first = next((e for _, e in records if e), "no objects")
        raise ManifestError(
            f"manifest {redact_url(url)} is not valid jsonl: {first}", code=ErrorCode.manifest_parse
        )
    _check_header(url, list(columns), "")
    return list(columns), iter(records)


def _parquet_frame(url: str, raw: bytes) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(raw))
    except (ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ManifestError(
            f"manifest {redact_url(url)} is not valid parquet: {first}",
            code=ErrorCode.manifest_parse,
        ) from exc


def _frame_records(url: str, frame: pd.DataFrame) -> tuple[list[str], Iterator[Record]]:
    columns = [str(c).strip() for c in frame.columns]
    frame.columns = pd.Index(columns)
    _check_header(url, columns, "")
    return columns, ((r, None) for r in frame.to_dict(orient="records"))


def _part_files(url: str, fs: Any, path: str) -> list[str]:
    """The Parquet part files of a folder or glob, in name order; ``_SUCCESS`` and other
    ``_``/``.`` files that exports leave beside them are not parts."""
    found = fs.glob(path) if _is_glob(url) else fs.find(path)
    parts = [
        str(p)
        for p in found
        if str(p).endswith(".parquet") and not PurePosixPath(str(p)).name.startswith(("_", "."))
    ]
    return sorted(parts)


def _parquet_parts(url: str, options: dict[str, Any]) -> pd.DataFrame:
    """A folder or glob of Parquet part files, as one frame (rows in part-name order)."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
        files = _part_files(url, fs, path.rstrip("/"))
    except (OSError, ValueError) as exc:
        raise ManifestError(
            f"manifest {redact_url(url)} cannot be listed: {type(exc).__name__}: {exc}",
            code=ErrorCode.manifest_unreadable,
        ) from exc
    if not files:
        raise ManifestError(
            f"manifest {redact_url(url)}: no .parquet files there",
            code=ErrorCode.manifest_not_found,
        )
    frames = [_parquet_frame(f"{url} ({PurePosixPath(f).name})", fs.cat_file(f)) for f in files]
    return pd.concat(frames, ignore_index=True)


def _folder_form(url: str, options: dict[str, Any]) -> ManifestForm:
    """A URL without an extension: a folder of Parquet parts, or an unknown form."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
        is_dir = bool(fs.isdir(path))
    except (OSError, ValueError):
        is_dir = False
    if is_dir:
        return ManifestForm(PARTS)
    if urlsplit(url).scheme in ("", "file"):
        _read_raw(url, options)  # a missing file says "not found" before "no extension"
    raise ManifestError(
        f"manifest {redact_url(url)}: no extension; use .csv, .tsv, .jsonl (each may end in .gz "
        "or .zst), .parquet, or a folder or glob of .parquet files",
        code=ErrorCode.manifest_format,
    )


def _load(url: str, storage_options: dict[str, Any] | None) -> tuple[list[str], Iterator[Record]]:
    options = _options(url, storage_options)
    form = manifest_form(url) or _folder_form(url, options)
    if form.kind == PARTS:
        return _frame_records(url, _parquet_parts(url, options))
    raw = _read_raw(url, options)
    if form.compression:
        raw = _decompress(url, raw, form.compression)
        if not raw.strip():
            raise ManifestError(
                f"manifest {redact_url(url)} is empty", code=ErrorCode.manifest_empty
            )
    if form.kind == "parquet":
        return _frame_records(url, _parquet_frame(url, raw))
    text = _text(url, raw)
    del raw
    if form.kind in ("csv", "tsv"):
        return _csv_records(url, text, "\t" if form.kind == "tsv" else ",")
    return _jsonl_records(url, text)


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _clean(value: Any) -> Any:
    """Numpy scalars and arrays from pandas become plain Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value


def check_video_url(value: Any) -> tuple[ErrorCode | None, str | None]:
    """(error_code, error) for a bad ``video_url`` value, or (None, None).

    A value without a scheme is a local path, and must name a file with an extension: "N/A",
    "12345" or "see notes" are not videos, and "www.x.com/a.mp4" is a URL missing its scheme.
    """
    if _is_blank(value):
        return ErrorCode.missing_video_url, "video_url is empty"
    if not isinstance(value, str):
        return ErrorCode.bad_video_url, f"video_url must be text, got {type(value).__name__}"
    text = value.strip()
    if CONTROL.search(text):
        return (
            ErrorCode.bad_video_url,
            "video_url contains control characters (a pasted line break?)",
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme and scheme not in SCHEMES:
        return ErrorCode.unsupported_scheme, (
            f"video_url scheme {scheme!r} is not supported (use http, https, s3, file or a path)"
        )
    if scheme in ("http", "https", "s3") and not parts.netloc:
        return ErrorCode.bad_video_url, f"video_url {redact_url(text)!r} has no host or bucket"
    if not scheme:
        if WEB_HOST.match(text):
            return ErrorCode.bad_video_url, (
                f"video_url {text[:80]!r} looks like a web address without http:// or https://"
            )
        if not PurePosixPath(text.replace("\\", "/")).suffix:
            return ErrorCode.bad_video_url, (
                f"video_url {text[:80]!r} is neither a URL nor a path to a video file"
            )
    return None, None


def read_manifest(
    url: str, option_fields: set[str], storage_options: dict[str, Any] | None = None
) -> Manifest:
    """Read ``url`` and validate each row; ``option_fields`` are the per-row override columns."""
    columns, records = _load(url, storage_options)
    ignored = [c for c in columns if c not in option_fields and c not in ("video_url", "id")]
    rows: list[ManifestRow] = []
    for number, (record, bad_line) in enumerate(records, start=1):
        raw_id = record.get("id")
        row_id = str(number) if _is_blank(raw_id) else str(_clean(raw_id)).strip()
        video_url = record.get("video_url")
        code, error = (ErrorCode.bad_row, bad_line) if bad_line else check_video_url(video_url)
        overrides = {
            k: _clean(v) for k, v in record.items() if k in option_fields and not _is_blank(v)
        }
        rows.append(
            ManifestRow(
                row=number,
                id=row_id,
                video_url=video_url.strip() if isinstance(video_url, str) else "",
                overrides=overrides,
                error_code=code,
                error=error,
                id_given=not _is_blank(raw_id),
            )
        )
    if not rows:
        raise ManifestError(
            f"manifest {redact_url(url)} has a header but no rows", code=ErrorCode.manifest_no_rows
        )
    return Manifest(url=url, rows=rows, ignored_columns=ignored)
