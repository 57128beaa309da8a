from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()


def test_run_with_flags_overrides_and_summary(clips: dict[str, Path], tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        [
            {"video_url": str(clips["silent"]), "output_format": ""},
            {"video_url": str(clips["silent"]), "output_format": "gif"},
        ]
    ).to_csv(manifest, index=False)
    result = runner.invoke(
        app,
        [
            "run",
            str(manifest),
            "--endpoint",
            "local",
            "--output",
            f"file://{tmp_path}/o",
            "--run-name",
            "cli",
            "--background",
            "custom",
            "--background-color",
            "0,0,255",
            "--output-format",
            "mkv_h265",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output and "reports:" in result.output
    results = pd.read_csv(tmp_path / "o/runs/cli/results.csv")
    assert list(results["output_format"]) == ["mkv_h265", "gif"]  # the row's own format wins


def test_failed_rows_give_exit_code_1(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_url\n{tmp_path}/missing.mp4\n")
    result = runner.invoke(app, ["run", str(manifest), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    results = pd.read_csv(next((tmp_path / "o/runs").glob("*/results.csv")))
    assert results.loc[0, "status"] == "failed"
    assert results.loc[0, "error_code"] == "input_not_found"


def test_unreadable_manifest_exits_2_with_the_reason(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "nope.csv"), "--output", str(tmp_path)])
    assert result.exit_code == 2
    assert "manifest_not_found" in result.output and "nope.csv" in result.output


def test_bad_option_value_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "m.csv", "--background", "purple"])
    assert result.exit_code == 2
    assert "purple" in result.output


def cli_env(tmp_path: Path) -> dict[str, str]:
    """A shell with no Prefect server configured: a run would start the temporary one."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (None, "manifest_not_found"),
        ("", "manifest_empty"),
        ("video_url\n", "manifest_no_rows"),
        ("url,id\nhttps://e.com/a.mp4,a\n", "manifest_no_video_url"),
    ],
)
def test_unusable_manifest_fails_fast_in_one_line_without_a_server(
    tmp_path: Path, content: str | None, code: str
) -> None:
    """Exit 2, one line with the code and what to do, no traceback, and no temporary server:
    Prefect prints "Starting temporary server" when it starts one, and its home stays empty."""
    import subprocess
    import sys

    manifest = tmp_path / "m.csv"
    if content is not None:
        manifest.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(manifest), "--output", str(tmp_path / "o")],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith(f"error ({code}): manifest ") and "m.csv" in lines[0]
    assert "; " in lines[0]  # what to do
    assert "Traceback" not in out and "temporary server" not in out
    assert not (tmp_path / "prefect-home").exists() or not any(
        (tmp_path / "prefect-home").rglob("*.db")
    )
    assert not (tmp_path / "o" / "runs").exists()


def test_invalid_option_is_one_line_before_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.cli

    def never(*args: object) -> None:
        raise AssertionError("the flow must not start")

    monkeypatch.setattr(flows.cli, "run_flow", never)
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_url\nhttps://e.com/a.mp4\n")
    result = runner.invoke(app, ["run", str(manifest), "--max-in-flight", "0"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error (invalid_params): max_in_flight: ")
    assert len(result.output.strip().splitlines()) == 1
    missing = runner.invoke(app, ["run", str(tmp_path / "nope.csv.gz"), "--output", str(tmp_path)])
    assert missing.exit_code == 2 and "manifest_not_found" in missing.output


def test_run_past_fail_when_exits_1_with_its_summary(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("fail_when:\n  failed_rows_over: 0\n")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_url\n{tmp_path}/missing.mp4\n")
    result = runner.invoke(
        app, ["run", str(manifest), "--output", str(tmp_path / "o"), "--config", str(config)]
    )
    assert result.exit_code == 1, result.output
    assert "failed" in result.output and "reports:" in result.output
