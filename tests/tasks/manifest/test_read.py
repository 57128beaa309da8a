from __future__ import annotations

import json
from pathlib import Path

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
