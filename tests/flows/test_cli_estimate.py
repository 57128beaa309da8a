"""``matteflow estimate`` prints a manifest's cost without sending anything."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from tests.fakes.fal_server import FakeFal


def test_estimate_sends_nothing(clips: dict[str, Path], tmp_path: Path, fake_fal: FakeFal) -> None:
    manifest = tmp_path / "m.csv"
    remote = fake_fal.serve_file(clips["silent"])
    manifest.write_text(
        f"id,video_url,model\na,{clips['person']},\nb,{remote},Portrait\nc,{remote},Huge\n"
    )
    result = CliRunner().invoke(app, ["estimate", str(manifest), "--endpoint", "birefnet"])
    assert result.exit_code == 0, result.output
    assert "estimated total $0.0018" in result.output  # 2 x 8 frames at 10 fps x $0.00111/s
    assert "row 3 invalid" in result.output and "price unverified" in result.output
    assert sum(fake_fal.accepted.values()) == 0
