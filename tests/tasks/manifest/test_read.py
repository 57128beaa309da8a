from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest

from tasks.endpoints import endpoint_info
from tasks.errors import ManifestError
from tasks.manifest.read import read_manifest

FIELDS = endpoint_info("local").option_fields


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return str(path)


ROWS = [
    {"id": "a", "video_url": "https://example.com/a.mp4", "background": "white"},
    {"id": "b", "video_url": "s3://bucket/b.mov", "background": ""},
    {"id": "c", "video_url": "/videos/c.mp4", "background": ""},
]


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_each_format_reads_rows_and_overrides(tmp_path: Path, kind: str) -> None:
    frame = pd.DataFrame(ROWS)
    path = tmp_path / f"m.{kind}"
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    else:
        frame.to_parquet(path, index=False)
    manifest = read_manifest(str(path), FIELDS)
    assert [r.id for r in manifest.rows] == ["a", "b", "c"]
    assert [r.row for r in manifest.rows] == [1, 2, 3]
    assert manifest.rows[0].overrides == {"background": "white"}
    assert manifest.rows[1].overrides == {}  # blank cells are not overrides
    assert all(r.error is None for r in manifest.rows)


def test_reads_from_any_fsspec_url() -> None:
    with fsspec.open("memory://manifests/m.csv", "w") as fh:
        fh.write("video_url\nhttps://example.com/x.mp4\n")
    manifest = read_manifest("memory://manifests/m.csv", FIELDS)
    assert manifest.rows[0].video_url == "https://example.com/x.mp4"
    assert manifest.rows[0].id == "1"  # no id column: the row number


def test_invalid_rows_get_a_reason_and_the_rest_proceed(tmp_path: Path) -> None:
    url = write(
        tmp_path / "m.csv",
        "id,video_url\nok,https://e.com/a.mp4\nblank,\nftp,ftp://e.com/a.mp4\nnohost,https:///a.mp4\n",
    )
    rows = {r.id: r for r in read_manifest(url, FIELDS).rows}
    assert rows["ok"].error is None
    assert rows["blank"].error_code == "missing_video_url"
    assert rows["ftp"].error_code == "unsupported_scheme"
    assert "ftp" in (rows["ftp"].error or "")
    assert rows["nohost"].error_code == "bad_video_url"


def test_bom_and_unknown_columns(tmp_path: Path) -> None:
    url = write(tmp_path / "m.csv", "\ufeffvideo_url,notes\nhttps://e.com/a.mp4,hello\n".encode())
    manifest = read_manifest(url, FIELDS)
    assert manifest.rows[0].video_url == "https://e.com/a.mp4"
    assert manifest.ignored_columns == ["notes"]


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("missing.csv", None, "manifest_not_found"),
        ("m.txt", "video_url\nx\n", "manifest_format"),
        ("empty.csv", "", "manifest_empty"),
        ("nocol.csv", "url\nhttps://e.com/a.mp4\n", "manifest_no_video_url"),
        ("bad.parquet", "this is not parquet", "manifest_parse"),
        (
            "latin1.csv",
            "video_url\nhttps://e.com/caf\xe9.mp4\n".encode("latin-1"),
            "manifest_encoding",
        ),
        ("bad.jsonl", "{not json\n[1, 2]\n", "manifest_parse"),
    ],
)
def test_unreadable_manifest_is_a_clear_error_naming_the_file(
    tmp_path: Path, name: str, content: str | bytes | None, code: str
) -> None:
    path = tmp_path / name
    if content is not None:
        write(path, content)
    with pytest.raises(ManifestError) as info:
        read_manifest(str(path), FIELDS)
    assert info.value.code == code
    assert name in str(info.value)


def _csv_bytes(sep: str = ",") -> bytes:
    return pd.DataFrame(ROWS).to_csv(index=False, sep=sep).encode()


def _jsonl_bytes() -> bytes:
    return ("\n".join(json.dumps(r) for r in ROWS) + "\n").encode()


def _compress(raw: bytes, codec: str) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as out:
        out.write(raw)
    return bytes(sink.getvalue())


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("m.csv.gz", lambda: _compress(_csv_bytes(), "gzip")),
        ("m.csv.zst", lambda: _compress(_csv_bytes(), "zstd")),
        ("m.jsonl.gz", lambda: _compress(_jsonl_bytes(), "gzip")),
        ("m.jsonl.zst", lambda: _compress(_jsonl_bytes(), "zstd")),
        ("m.tsv", lambda: _csv_bytes("\t")),
        ("m.tsv.gz", lambda: _compress(_csv_bytes("\t"), "gzip")),
    ],
)
def test_compressed_and_tab_separated_manifests(tmp_path: Path, name: str, make: Any) -> None:
    url = write(tmp_path / name, make())
    manifest = read_manifest(url, FIELDS)
    assert [r.id for r in manifest.rows] == ["a", "b", "c"]
    assert [r.video_url for r in manifest.rows] == [r["video_url"] for r in ROWS]
    assert manifest.rows[0].overrides == {"background": "white"}
    assert all(r.error is None and r.id_given for r in manifest.rows)


def test_gzip_is_really_decompressed_not_read_as_text(tmp_path: Path) -> None:
    """The same bytes under a plain .csv name are not a readable manifest."""
    url = write(tmp_path / "m.csv", _compress(_csv_bytes(), "gzip"))
    with pytest.raises(ManifestError):
        read_manifest(url, FIELDS)


def test_corrupt_zstd_is_a_parse_error(tmp_path: Path) -> None:
    url = write(tmp_path / "m.csv.zst", b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(ManifestError) as info:
        read_manifest(url, FIELDS)
    assert info.value.code == "manifest_parse" and "zstd" in str(info.value)


def _parts(folder: Path) -> None:
    folder.mkdir()
    pd.DataFrame(ROWS[:2]).to_parquet(folder / "part-00000.parquet", index=False)
    pd.DataFrame(ROWS[2:]).to_parquet(folder / "part-00001.parquet", index=False)
    (folder / "_SUCCESS").write_text("")


@pytest.mark.parametrize("suffix", ["", "/", "/*.parquet", "/part-*.parquet"])
def test_folder_or_glob_of_parquet_parts(tmp_path: Path, suffix: str) -> None:
    _parts(tmp_path / "export")
    manifest = read_manifest(str(tmp_path / "export") + suffix, FIELDS)
    assert [r.id for r in manifest.rows] == ["a", "b", "c"]
    assert [r.row for r in manifest.rows] == [1, 2, 3]


def test_parquet_parts_at_an_fsspec_url() -> None:
    for i, rows in enumerate([ROWS[:1], ROWS[1:]]):
        with fsspec.open(f"memory://exports/run1/part-{i}.parquet", "wb") as fh:
            pd.DataFrame(rows).to_parquet(fh, index=False)
    assert [r.id for r in read_manifest("memory://exports/run1/", FIELDS).rows] == ["a", "b", "c"]
    glob = read_manifest("memory://exports/run1/part-*.parquet", FIELDS)
    assert [r.id for r in glob.rows] == ["a", "b", "c"]


def test_empty_folder_and_unknown_compressed_form(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with pytest.raises(ManifestError) as info:
        read_manifest(str(tmp_path / "none"), FIELDS)
    assert info.value.code == "manifest_not_found"
    with pytest.raises(ManifestError) as info:
        read_manifest(write(tmp_path / "m.txt.gz", b"x"), FIELDS)
    assert info.value.code == "manifest_format" and ".txt.gz" in str(info.value)


def test_row_ids_say_whether_the_manifest_gave_them(tmp_path: Path) -> None:
    url = write(tmp_path / "m.csv", "id,video_url\nx,https://e.com/a.mp4\n,https://e.com/b.mp4\n")
    rows = read_manifest(url, FIELDS).rows
    assert [(r.id, r.id_given) for r in rows] == [("x", True), ("2", False)]
