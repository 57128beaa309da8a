"""Read and validate manifests: CSV, JSONL or Parquet from any fsspec URL.

A manifest that cannot be read at all raises ``ManifestError`` naming the file; a bad row becomes
an invalid ``ManifestRow`` with a reason, and the other rows proceed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import fsspec
import pandas as pd

from tasks.errors import ManifestError
from tasks.storage import redact_url, s3_options

SCHEMES = ("http", "https", "s3", "file")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


@dataclass
class ManifestRow:
    """One manifest row: ``row`` is 1-based in file order; ``error`` set means invalid."""

    row: int
    id: str
    video_url: str
    overrides: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error: str | None = None


@dataclass
class Manifest:
    url: str
    rows: list[ManifestRow]
    ignored_columns: list[str] = field(default_factory=list)


def manifest_format(url: str) -> str:
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    if suffix not in FORMATS:
        raise ManifestError(
            f"manifest {redact_url(url)}: unknown extension {suffix or '(none)'!r}; "
            "use .csv, .jsonl or .parquet",
            code="manifest_format",
        )
    return FORMATS[suffix]


def _load(url: str, storage_options: dict[str, Any] | None) -> pd.DataFrame:
    kind = manifest_format(url)
    options = storage_options
    if options is None:
        options = s3_options() if url.startswith("s3://") else {}
    try:
        with fsspec.open(url, "rb", **options) as fh:
            raw = fh.read()
    except FileNotFoundError as exc:
        raise ManifestError(
            f"manifest {redact_url(url)} not found", code="manifest_not_found"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(
            f"manifest {redact_url(url)} cannot be opened: {type(exc).__name__}: {exc}",
            code="manifest_unreadable",
        ) from exc
    if not raw.strip():
        raise ManifestError(f"manifest {redact_url(url)} is empty", code="manifest_empty")
    try:
        if kind == "csv":
            text = raw.decode("utf-8-sig")
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        if kind == "jsonl":
            text = raw.decode("utf-8-sig")
            return pd.read_json(io.StringIO(text), lines=True, dtype=False)
        return pd.read_parquet(io.BytesIO(raw))
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"manifest {redact_url(url)} is not UTF-8 text (byte {exc.start}); save it as UTF-8",
            code="manifest_encoding",
        ) from exc
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ManifestError(
            f"manifest {redact_url(url)} is not valid {kind}: {first}", code="manifest_parse"
        ) from exc


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


def check_video_url(value: Any) -> tuple[str | None, str | None]:
    """(error_code, error) for a bad ``video_url`` value, or (None, None)."""
    if _is_blank(value):
        return "missing_video_url", "video_url is empty"
    if not isinstance(value, str):
        return "bad_video_url", f"video_url must be text, got {type(value).__name__}"
    text = value.strip()
    scheme = urlsplit(text).scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme and scheme not in SCHEMES:
        return "unsupported_scheme", (
            f"video_url scheme {scheme!r} is not supported (use http, https, s3, file or a path)"
        )
    if scheme in ("http", "https", "s3") and not urlsplit(text).netloc:
        return "bad_video_url", f"video_url {redact_url(text)!r} has no host or bucket"
    return None, None


def read_manifest(
    url: str, option_fields: set[str], storage_options: dict[str, Any] | None = None
) -> Manifest:
    """Read ``url`` and validate each row; ``option_fields`` are the per-row override columns."""
    frame = _load(url, storage_options)
    columns = [str(c).strip() for c in frame.columns]
    frame.columns = pd.Index(columns)
    if "video_url" not in columns:
        raise ManifestError(
            f"manifest {redact_url(url)} has no 'video_url' column (columns: {', '.join(columns)})",
            code="manifest_no_video_url",
        )
    ignored = [c for c in columns if c not in option_fields and c not in ("video_url", "id")]
    rows: list[ManifestRow] = []
    for number, record in enumerate(frame.to_dict(orient="records"), start=1):
        raw_id = record.get("id")
        row_id = str(number) if _is_blank(raw_id) else str(_clean(raw_id)).strip()
        video_url = record.get("video_url")
        code, error = check_video_url(video_url)
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
            )
        )
    return Manifest(url=url, rows=rows, ignored_columns=ignored)
