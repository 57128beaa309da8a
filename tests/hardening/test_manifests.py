"""Manifests nobody cleaned: each bad file is one clear error, each bad row one invalid row."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tasks.endpoints import endpoint_info
from tasks.errors import ManifestError
from tasks.manifest.plan import plan_jobs
from tasks.manifest.read import read_manifest

LOCAL = endpoint_info("local")
FIELDS = LOCAL.option_fields


def write(path: Path, content: str | bytes) -> str:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


@pytest.mark.parametrize(
    ("name", "content", "code", "says"),
    [
        ("empty.csv", "", "manifest_empty", "is empty"),
        ("blank.csv", "\n\n  \n", "manifest_empty", "is empty"),
        ("header.csv", "id,video_url\n", "manifest_no_rows", "no rows"),
        ("header-blank.csv", "id,video_url\n\n\n", "manifest_no_rows", "no rows"),
        ("nocol.csv", "id,url\na,https://e.com/a.mp4\n", "manifest_no_video_url", "id, url"),
        ("semi.csv", "id;video_url\na;https://e.com/a.mp4\n", "manifest_delimiter", "semicolon"),
        ("tabs.csv", "id\tvideo_url\na\thttps://e.com/a.mp4\n", "manifest_delimiter", "tab"),
        (
            "dupcol.csv",
            "video_url,video_url\nx.mp4,y.mp4\n",
            "manifest_duplicate_columns",
            "video_url",
        ),
        ("latin1.csv", "video_url\ncafé.mp4\n".encode("latin-1"), "manifest_encoding", "UTF-8"),
        ("bytes.csv", b"video_url\n\xff\xfe\x00garbage\x81\n", "manifest_encoding", "UTF-8"),
        ("nojson.jsonl", "{not json\n[1, 2]\n", "manifest_parse", "line 1"),
        ("nocol.jsonl", '{"url": "https://e.com/a.mp4"}\n', "manifest_no_video_url", "url"),
        ("fake.parquet", "video_url\nx.mp4\n", "manifest_parse", "parquet"),
        ("notes.txt", "video_url\nx.mp4\n", "manifest_format", ".txt"),
    ],
)
def test_an_unusable_manifest_is_one_clear_error(
    tmp_path: Path, name: str, content: str | bytes, code: str, says: str, tally: Counter[str]
) -> None:
    url = write(tmp_path / name, content)
    with pytest.raises(ManifestError) as info:
        read_manifest(url, FIELDS)
    tally["manifests_tried"] += 1
    assert info.value.code == code
    assert name in str(info.value) and says in str(info.value)


def test_bom_and_utf16_spreadsheet_exports_are_read(tmp_path: Path) -> None:
    text = "id,video_url\na,https://e.com/a.mp4\n"
    for name, raw in (
        ("bom.csv", b"\xef\xbb\xbf" + text.encode()),
        ("utf16.csv", text.encode("utf-16")),  # Excel "Unicode text" keeps a BOM
    ):
        rows = read_manifest(write(tmp_path / name, raw), FIELDS).rows
        assert [(r.id, r.video_url, r.error) for r in rows] == [("a", "https://e.com/a.mp4", None)]


BAD_VALUES = {
    "blank": ("", "missing_video_url"),
    "spaces": ("   ", "missing_video_url"),
    "na": ("N/A", "bad_video_url"),
    "words": ("see notes", "bad_video_url"),
    "number": ("12345", "bad_video_url"),
    "no-scheme": ("www.example.com/a.mp4", "bad_video_url"),
    "ftp": ("ftp://example.com/a.mp4", "unsupported_scheme"),
    "js": ("javascript:alert(1)", "unsupported_scheme"),
    "data": ('"data:video/mp4;base64,AAAA"', "unsupported_scheme"),
    "mailto": ("mailto:a@b.c", "unsupported_scheme"),
    "no-host": ("https:///a.mp4", "bad_video_url"),
    "no-bucket": ("s3:///a.mp4", "bad_video_url"),
    "newline": ('"https://e.com/a\nb.mp4"', "bad_video_url"),
}


def test_every_bad_row_gets_its_own_reason_and_good_rows_proceed(
    tmp_path: Path, tally: Counter[str]
) -> None:
    lines = ["id,video_url,notes", "ok,https://e.com/a.mp4,fine", "win,C:\\videos\\b.mp4,"]
    lines += [f"{name},{value}," for name, (value, _) in BAD_VALUES.items()]
    lines += ["ragged,https://e.com/c.mp4,x,extra,fields"]
    manifest = read_manifest(write(tmp_path / "m.csv", "\n".join(lines) + "\n"), FIELDS)
    rows = {r.id: r for r in manifest.rows}
    tally["manifest_rows_tried"] += len(rows)
    assert rows["ok"].error is None and rows["win"].error is None
    for name, (_, code) in BAD_VALUES.items():
        assert rows[name].error_code == code, (name, rows[name].error)
        assert rows[name].error
    assert rows["ragged"].error_code == "bad_row" and "5 fields" in (rows["ragged"].error or "")
    assert manifest.ignored_columns == ["notes"]  # said once, not once a row
    plan = plan_jobs(manifest, LOCAL, {})
    assert len(plan.jobs) == 2 and len(plan.invalid) == len(rows) - 2
    assert {r["status"] for r in plan.invalid} == {"invalid"}
    assert all(r["error_code"] and r["error"] for r in plan.invalid)


def test_jsonl_bad_lines_are_bad_rows_not_a_bad_file(tmp_path: Path) -> None:
    text = (
        '{"id": "a", "video_url": "https://e.com/a.mp4"}\n'
        "{oops\n"
        '["a", "list"]\n'
        "\n"
        '{"id": "n", "video_url": 42}\n'
        '{"id": "b", "video_url": "https://e.com/b.mp4", "mystery": 1}\n'
    )
    manifest = read_manifest(write(tmp_path / "m.jsonl", text), FIELDS)
    got = [(r.row, r.id, r.error_code) for r in manifest.rows]
    assert got == [
        (1, "a", None),
        (2, "2", "bad_row"),
        (3, "3", "bad_row"),
        (4, "n", "bad_video_url"),
        (5, "b", None),
    ]
    assert manifest.ignored_columns == ["mystery"]


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("background", "purple", "background"),
        ("output_format", "mp5", "output_format"),
        ("output_format", "mp4_h264", "carries no alpha"),  # transparent by default
        ("smoothing", "abc", "smoothing"),
        ("smoothing", "0", "smoothing"),
        ("smoothing", "7", "smoothing"),
        ("background_color", "300,0,0", "background_color"),
        ("background_color", "1,2", "not a colour"),
    ],
)
def test_invalid_row_options_make_that_row_invalid(
    tmp_path: Path, column: str, value: str, says: str, tally: Counter[str]
) -> None:
    frame = pd.DataFrame(
        [
            {"id": "good", "video_url": "https://e.com/a.mp4", column: ""},
            {"id": "bad", "video_url": "https://e.com/a.mp4", column: value},
        ]
    )
    if column == "background_color":
        frame["background"] = ["", "custom"]
    frame.to_csv(tmp_path / "m.csv", index=False)
    plan = plan_jobs(read_manifest(str(tmp_path / "m.csv"), FIELDS), LOCAL, {})
    tally["manifest_rows_tried"] += 2
    assert [j.id for j in plan.jobs] == ["good"]
    (row,) = plan.invalid
    assert row["id"] == "bad" and row["error_code"] == "invalid_options"
    assert says in row["error"]


def test_duplicate_rows_become_one_job(tmp_path: Path) -> None:
    lines = ["id,video_url,background"]
    lines += ["a,https://e.com/a.mp4,"] * 3 + [
        "b,https://e.com/a.mp4,white",
        "a,https://e.com/a.mp4,",
    ]
    plan = plan_jobs(read_manifest(write(tmp_path / "m.csv", "\n".join(lines)), FIELDS), LOCAL, {})
    assert [(j.row, j.id) for j in plan.jobs] == [(1, "a"), (4, "b")]  # other options: own job
    assert sorted(plan.duplicates) == [2, 3, 5]
    assert set(plan.duplicates.values()) == {plan.jobs[0].key}


ROWS = 100_000
ROOT = Path(__file__).resolve().parents[2]
MEASURE = """
import json, sys
from tasks.endpoints import endpoint_info
from tasks.manifest.read import read_manifest
from tasks.manifest.plan import plan_jobs

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])  # kB

info = endpoint_info("local")
before = status("VmRSS:")
manifest = read_manifest(sys.argv[1], info.option_fields)
plan = plan_jobs(manifest, info, {})
print(json.dumps({"before_kb": before, "peak_kb": status("VmHWM:"), "rows": len(manifest.rows),
                  "jobs": len(plan.jobs), "invalid": len(plan.invalid)}))
"""


def test_a_100k_row_manifest_reads_and_plans_in_bounded_memory(tmp_path: Path) -> None:
    """Peak RSS growth of read + plan (in a fresh process) stays under 4 KiB a row."""
    path = tmp_path / "big.csv"
    with path.open("w") as fh:
        fh.write("id,video_url,background\n")
        for i in range(ROWS):
            background = "white" if i % 7 == 0 else ""
            url = f"https://cdn.example.com/catalog/{i:06d}.mp4" if i % 101 else "N/A"
            fh.write(f"clip-{i},{url},{background}\n")
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    invalid = len(range(0, ROWS, 101))
    assert (got["rows"], got["jobs"], got["invalid"]) == (ROWS, ROWS - invalid, invalid)
    per_row = (got["peak_kb"] - got["before_kb"]) * 1024 / ROWS
    print(
        f"100k-row manifest: peak RSS +{(got['peak_kb'] - got['before_kb']) / 1024:.0f} MiB, "
        f"{per_row:.0f} B a row"
    )
    assert 0 < per_row < 4096, f"{per_row:.0f} bytes a row"
