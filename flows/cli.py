"""``matteflow`` command line: the same flow the deployments run, started from a terminal.

With no ``PREFECT_API_URL`` Prefect starts its temporary local server for the run.
Exit codes: 0 every row succeeded or was reused; 1 some rows did not; 2 the run could not start.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from flows.params import RunParams
from tasks.endpoints import EndpointName
from tasks.errors import MatteflowError
from tasks.formats import OutputFormat
from tasks.options import Background

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

ManifestArg = Annotated[str, typer.Argument(help="Manifest URL: CSV, JSONL or Parquet.")]
EndpointOpt = Annotated[EndpointName, typer.Option(help="Removal endpoint.")]


def build_params(config: Path | None, **flags: Any) -> RunParams:
    """Config file values first, then the flags the user gave."""
    values: dict[str, Any] = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise typer.BadParameter(f"{config} must hold a mapping of run parameters")
        values.update(loaded)
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return RunParams.model_validate(values)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"matteflow run: {summary['params'].get('run_name') or ''}")
    table.add_column("status")
    table.add_column("rows", justify="right")
    for status, count in summary["counts"].items():
        if count:
            table.add_row(status, str(count))
    totals = summary["totals"]
    table.add_row("[bold]total[/bold]", str(summary["rows"]))
    console.print(table)
    console.print(
        f"frames {totals['frames']}, video {totals['video_seconds']:.1f} s, "
        f"cost ${totals['cost_usd']:.4f} (estimated ${totals['estimated_cost_usd']:.4f}), "
        f"{summary['timings']['total_s']:.1f} s"
    )
    console.print(f"reports: {summary['report_url']}")


@app.callback()
def main() -> None:
    """Bulk video background removal for video catalogs, orchestrated by Prefect."""


def quiet_prefect() -> None:
    """The temporary server's telemetry write races its own migration ("database is locked")."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@app.command()
def run(
    manifest: ManifestArg,
    endpoint: EndpointOpt = EndpointName.local,
    output: Annotated[str, typer.Option(help="Output root: path, file://, s3://")] = "./output",
    run_name: Annotated[str | None, typer.Option(help="Report folder name.")] = None,
    background: Annotated[Background | None, typer.Option(help="Background.")] = None,
    background_color: Annotated[str | None, typer.Option(help="R,G,B for custom.")] = None,
    output_format: Annotated[OutputFormat | None, typer.Option(help="Output format.")] = None,
    smoothing: Annotated[float | None, typer.Option(help="Local engine smoothing.")] = None,
    max_in_flight: Annotated[int | None, typer.Option(help="Jobs in flight.")] = None,
    budget: Annotated[float | None, typer.Option(help="Budget in USD.")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of run parameters.")] = None,
) -> None:
    """Remove the background of every video in MANIFEST."""
    quiet_prefect()
    from flows.removal import remove_backgrounds

    params = build_params(
        config, manifest=manifest, endpoint=endpoint, output=output, run_name=run_name,
        background=background, background_color=background_color, output_format=output_format,
        smoothing=smoothing, max_in_flight=max_in_flight, budget_usd=budget,
        s3_endpoint_url=s3_endpoint_url,
    )  # fmt: skip
    if params.run_name is None:
        params = params.model_copy(update={"run_name": params.resolved_run_name()})
    try:
        summary = asyncio.run(remove_backgrounds(params))
    except MatteflowError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc}")
        raise typer.Exit(2) from None
    print_summary(summary)
    counts = summary["counts"]
    ok = counts["succeeded"] + counts["skipped"]
    raise typer.Exit(0 if ok == summary["rows"] else 1)


if __name__ == "__main__":
    app()
