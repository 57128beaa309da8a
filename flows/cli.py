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
from tasks.endpoints.birefnet import (
    OperatingResolution,
    VideoOutputType,
    VideoQuality,
    VideoWriteMode,
)
from tasks.endpoints.options import Background
from tasks.errors import MatteflowError
from tasks.media.formats import OutputFormat
from tasks.run.progress import RunProgress, listening

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

ManifestArg = Annotated[str, typer.Argument(help="Manifest URL: CSV, JSONL or Parquet.")]
EndpointOpt = Annotated[EndpointName, typer.Option(help="Removal endpoint.")]
BackgroundOpt = Annotated[Background | None, typer.Option(help="Background.")]
ColorOpt = Annotated[str | None, typer.Option(help="R,G,B for custom.")]
FormatOpt = Annotated[OutputFormat | None, typer.Option(help="Output format.")]
SmoothingOpt = Annotated[float | None, typer.Option(help="Local engine smoothing.")]
ModelOpt = Annotated[
    str | None,
    typer.Option(help="birefnet: model variant; local: selfie, general, selfie_landscape, onnx."),
]
ResolutionOpt = Annotated[
    OperatingResolution | None, typer.Option(help="birefnet: operating resolution.")
]
MaskOpt = Annotated[
    bool | None, typer.Option("--output-mask/--no-output-mask", help="birefnet: matte video.")
]
RefineOpt = Annotated[
    bool | None,
    typer.Option("--refine-foreground/--no-refine-foreground", help="birefnet: refine edges."),
]
SyncOpt = Annotated[
    bool | None, typer.Option("--sync-mode/--no-sync-mode", help="birefnet: inline outputs.")
]
OutputTypeOpt = Annotated[
    VideoOutputType | None, typer.Option(help="birefnet: output container and codec.")
]
QualityOpt = Annotated[VideoQuality | None, typer.Option(help="birefnet: encoder quality.")]
WriteModeOpt = Annotated[VideoWriteMode | None, typer.Option(help="birefnet: encoder mode.")]
S3Opt = Annotated[str | None, typer.Option(help="S3-compatible endpoint.")]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML file of run parameters.")]


def build_params(config: Path | None, **flags: Any) -> RunParams:
    """Config file values first, then the flags the user gave.

    Local inputs are allowed: the CLI runs on the user's own machine, reading their own files.
    """
    values: dict[str, Any] = {"allow_local_inputs": True}
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


class TerminalProgress:
    """A rich progress bar over the jobs of a run started from this terminal."""

    def __init__(self, out: Console) -> None:
        self.bar = Progress(
            TextColumn("[bold]jobs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            console=out,
            disable=not out.is_terminal,
        )
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
    background: BackgroundOpt = None,
    background_color: ColorOpt = None,
    output_format: FormatOpt = None,
    smoothing: SmoothingOpt = None,
    model: ModelOpt = None,
    operating_resolution: ResolutionOpt = None,
    output_mask: MaskOpt = None,
    refine_foreground: RefineOpt = None,
    sync_mode: SyncOpt = None,
    video_output_type: OutputTypeOpt = None,
    video_quality: QualityOpt = None,
    video_write_mode: WriteModeOpt = None,
    max_in_flight: Annotated[int | None, typer.Option(help="Jobs in flight.")] = None,
    submit_rate: Annotated[float | None, typer.Option(help="Job starts per second.")] = None,
    shared_limit: Annotated[
        str | None, typer.Option(help="Prefect global concurrency limit shared by workers.")
    ] = None,
    task_runs: Annotated[
        bool | None, typer.Option("--task-runs/--no-task-runs", help="A task run per job.")
    ] = None,
    budget: Annotated[float | None, typer.Option(help="Budget in USD.")] = None,
    resubmit_unknown: Annotated[
        bool,
        typer.Option(
            help="fal: submit again jobs whose earlier submit had an unknown outcome "
            "(check the fal dashboard first: they may be billed twice)."
        ),
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="fal: submit again jobs fal reported as failed earlier.")
    ] = False,
    fal_uploads: Annotated[
        bool | None,
        typer.Option("--fal-uploads/--no-fal-uploads", help="fal: upload local input files."),
    ] = None,
    presign_expiry: Annotated[
        int | None, typer.Option(help="fal: seconds presigned s3:// input URLs stay valid.")
    ] = None,
    s3_endpoint_url: S3Opt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove the background of every video in MANIFEST."""
    quiet_prefect()
    params = build_params(
        config,
        manifest=manifest,
        endpoint=endpoint,
        output=output,
        run_name=run_name,
        background=background,
        background_color=background_color,
        output_format=output_format,
        smoothing=smoothing,
        model=model,
        operating_resolution=operating_resolution,
        output_mask=output_mask,
        refine_foreground=refine_foreground,
        sync_mode=sync_mode,
        video_output_type=video_output_type,
        video_quality=video_quality,
        video_write_mode=video_write_mode,
        max_in_flight=max_in_flight,
        budget_usd=budget,
        resubmit_unknown=resubmit_unknown or None,
        retry_failed=retry_failed or None,
        fal_uploads=fal_uploads,
        presign_expiry_s=presign_expiry,
        submit_rate=submit_rate,
        shared_limit=shared_limit,
        task_run_per_job=task_runs,
        s3_endpoint_url=s3_endpoint_url,
    )
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


@app.command()
def estimate(
    manifest: ManifestArg,
    endpoint: EndpointOpt = EndpointName.pixelcut,
    background: BackgroundOpt = None,
    background_color: ColorOpt = None,
    output_format: FormatOpt = None,
    smoothing: SmoothingOpt = None,
    model: ModelOpt = None,
    operating_resolution: ResolutionOpt = None,
    output_mask: MaskOpt = None,
    refine_foreground: RefineOpt = None,
    sync_mode: SyncOpt = None,
    video_output_type: OutputTypeOpt = None,
    video_quality: QualityOpt = None,
    video_write_mode: WriteModeOpt = None,
    s3_endpoint_url: S3Opt = None,
    config: ConfigOpt = None,
) -> None:
    """Print what MANIFEST would cost on ENDPOINT, from the inputs' metadata; sends nothing."""
    from tasks.endpoints import endpoint_info
    from tasks.manifest.plan import plan_jobs
    from tasks.manifest.read import read_manifest
    from tasks.run.cost import price_for
    from tasks.run.estimate import estimate_jobs
    from tasks.storage.store import s3_options

    params = build_params(
        config,
        manifest=manifest,
        endpoint=endpoint,
        background=background,
        background_color=background_color,
        output_format=output_format,
        smoothing=smoothing,
        model=model,
        operating_resolution=operating_resolution,
        output_mask=output_mask,
        refine_foreground=refine_foreground,
        sync_mode=sync_mode,
        video_output_type=video_output_type,
        video_quality=video_quality,
        video_write_mode=video_write_mode,
        s3_endpoint_url=s3_endpoint_url,
    )
    info = endpoint_info(params.endpoint)
    s3 = s3_options(params.s3_endpoint_url)
    try:
        read = read_manifest(
            params.manifest, info.option_fields, s3 if manifest.startswith("s3://") else None
        )
        price = price_for(info.name.value)
    except (MatteflowError, KeyError) as exc:
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    plan = plan_jobs(read, info, params.run_options())
    rows = estimate_jobs(plan.jobs, price, s3)
    table = Table(title=f"estimate: {info.name.value} ({price.unit}, ${price.price_usd})")
    for col in ("row", "id", "frames", "duration_s", "estimated_cost_usd", "note"):
        table.add_column(col, justify="right" if col not in ("id", "note") else "left")
    for r in rows:
        note = r["error"] or ("" if r["exact"] else "frames from duration x fps")
        table.add_row(
            str(r["row"]),
            r["id"],
            str(r["frames"] if r["frames"] is not None else "-"),
            str(r["duration_s"] if r["duration_s"] is not None else "-"),
            f"{r['estimated_cost_usd']:.4f}",
            note,
        )
    console.print(table)
    total = sum(r["estimated_cost_usd"] for r in rows)
    unreadable = sum(1 for r in rows if r["error"])
    console.print(
        f"{len(rows)} jobs, {len(plan.invalid)} invalid rows, {len(plan.duplicates)} duplicates; "
        f"estimated total ${total:.4f}"
        + (f" ({unreadable} inputs could not be probed)" if unreadable else "")
        + ("" if price.verified else f"  [yellow]price unverified: {price.source}[/yellow]")
    )
    for bad in plan.invalid:
        console.print(f"row {bad['row']} invalid ({bad['error_code']}): {bad['error']}")


if __name__ == "__main__":
    app()
