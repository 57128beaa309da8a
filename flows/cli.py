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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from flows.params import RunParams
from tasks.endpoints import EndpointName
from tasks.errors import MatteflowError
from tasks.formats import OutputFormat
from tasks.options import Background
from tasks.progress import RunProgress, listening

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


class TerminalProgress:
    """A rich progress bar over the jobs of a run started from this terminal."""

    def __init__(self, out: Console) -> None:
        self.bar = Progress(
            TextColumn("[bold]jobs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[counts]}"),
            console=out, disable=not out.is_terminal,
        )  # fmt: skip
        self.task = self.bar.add_task("jobs", total=None, counts="")

    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total)
        self.bar.start()

    def advance(self, row: dict[str, Any], progress: RunProgress) -> None:
        counts = " ".join(f"{k}:{v}" for k, v in sorted(progress.by_status.items()))
        self.bar.update(
            self.task, completed=progress.done, counts=f"{counts} ${progress.cost_usd:.2f}"
        )

    def stop(self, progress: RunProgress) -> None:
        self.bar.update(self.task, completed=progress.done)
        self.bar.stop()


def run_flow(params: RunParams) -> tuple[dict[str, Any], bool]:
    """Run the flow here with a progress bar; (summary, cancelled). Ctrl-C cancels the run:
    fal jobs in flight are cancelled, the ledger records them and a partial report is written."""
    from flows.removal import remove_backgrounds, storage_for

    async def main() -> tuple[dict[str, Any] | None, str | None]:
        state = await remove_backgrounds(params, return_state=True)
        if state.is_cancelled():
            return None, state.message or "cancelled"
        return await state.aresult(), None  # raises the flow's own error if it failed

    with listening(TerminalProgress(console)):
        result, cancel_message = asyncio.run(main())
    if result is not None:
        return result, False
    storage = storage_for(params.output, params.s3_endpoint_url)
    summary = storage.read_json(f"runs/{params.resolved_run_name()}/summary.json")
    if summary is None or not summary.get("cancelled"):
        raise MatteflowError(f"run cancelled before its report was written: {cancel_message}")
    return summary, True


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
    submit_rate: Annotated[float | None, typer.Option(help="Job starts per second.")] = None,
    shared_limit: Annotated[
        str | None, typer.Option(help="Prefect global concurrency limit shared by workers.")
    ] = None,
    task_runs: Annotated[
        bool | None, typer.Option("--task-runs/--no-task-runs", help="A task run per job.")
    ] = None,
    budget: Annotated[float | None, typer.Option(help="Budget in USD.")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of run parameters.")] = None,
) -> None:
    """Remove the background of every video in MANIFEST."""
    quiet_prefect()
    params = build_params(
        config, manifest=manifest, endpoint=endpoint, output=output, run_name=run_name,
        background=background, background_color=background_color, output_format=output_format,
        smoothing=smoothing, max_in_flight=max_in_flight, budget_usd=budget,
        submit_rate=submit_rate, shared_limit=shared_limit, task_run_per_job=task_runs,
        s3_endpoint_url=s3_endpoint_url,
    )  # fmt: skip
    if params.run_name is None:
        params = params.model_copy(update={"run_name": params.resolved_run_name()})
    try:
        summary, cancelled = run_flow(params)
    except MatteflowError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc}")
        raise typer.Exit(2) from None
    print_summary(summary)
    if cancelled:
        console.print("[yellow]cancelled[/yellow]: run the same command again to continue")
        raise typer.Exit(130)
    counts = summary["counts"]
    ok = counts["succeeded"] + counts["skipped"]
    raise typer.Exit(0 if ok == summary["rows"] else 1)


if __name__ == "__main__":
    app()
