"""Endpoint options are declared once (the option models); flow parameters and flags follow."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app
from flows.cli_flags import with_option_flags
from flows.params import OPTION_KEYS, RunParams
from tasks.endpoints import ENDPOINTS
from tasks.endpoints.run_options import run_options

WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def test_every_endpoint_option_is_a_described_run_parameter() -> None:
    declared = {name for info in ENDPOINTS.values() for name in info.option_fields}
    assert set(OPTION_KEYS) == declared
    for name in declared:
        field = RunParams.model_fields[name]
        assert field.default is None  # None: the endpoint's own default applies
        endpoints = [e.value for e, info in ENDPOINTS.items() if name in info.option_fields]
        assert field.description and all(f"{e}" in field.description for e in endpoints)


def test_run_parameters_keep_the_endpoints_types_and_bounds() -> None:
    assert RunParams(manifest="m.csv", endpoint="birefnet", model="Portrait").model
    assert RunParams(manifest="m.csv", endpoint="local", model="onnx").model == "onnx"
    for bad in ({"model": "Huge"}, {"smoothing": 0}, {"onnx_input_side": 8}):
        with pytest.raises(ValidationError):
            RunParams.model_validate({"manifest": "m.csv", **bad})
    schema = RunParams.model_json_schema()
    refs = [a.get("$ref") for a in schema["properties"]["video_quality"]["anyOf"]]
    assert "#/$defs/VideoQuality" in refs  # an enum: a dropdown in the Prefect UI form


@pytest.mark.parametrize("command", ["run", "estimate"])
def test_help_lists_every_option_flag_with_its_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    for name, option in run_options().items():
        assert f"--{name.replace('_', '-')}" in text
        assert " ".join(option.description.split()[:4]) in text


def test_flags_arrive_as_plain_values_that_run_parameters_accept() -> None:
    seen: dict[str, Any] = {}
    probe = typer.Typer()

    @probe.command()
    @with_option_flags
    def cmd(manifest: str, **options: Any) -> None:
        seen.update(manifest=manifest, **options)

    args = ["m.csv", "--model", "Portrait", "--no-refine-foreground", "--video-quality", "low"]
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 0, result.output
    assert type(seen["model"]) is str and seen["model"] == "Portrait"
    assert seen["refine_foreground"] is False
    assert seen["video_quality"] == "low" and seen["smoothing"] is None
    given = {k: v for k, v in seen.items() if v is not None}
    params = RunParams.model_validate({"endpoint": "birefnet", **given})
    assert params.run_options() == {
        "model": "Portrait",
        "refine_foreground": False,
        "video_quality": "low",
    }
    refused = CliRunner().invoke(probe, ["m.csv", "--model", "Huge"])
    assert refused.exit_code == 2 and "Huge" in refused.output
