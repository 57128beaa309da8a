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
