"""``matteflow`` command line: the same flow the deployments run, started from a terminal.

With no ``PREFECT_API_URL`` Prefect starts its temporary local server for the run; the manifest
and the options are checked before that, so a user error is one line, at once.
Exit codes: 0 every row succeeded or was reused; 1 some rows did not; 2 the run could not start.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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

from flows.cli_flags import with_option_flags
from flows.params import RunParams
from flows.preflight import check_run, user_error_line
from tasks.endpoints import EndpointName
from tasks.errors import ErrorCode, MatteflowError, RunFailed
from tasks.ledger.results import ResultRow
from tasks.run.progress import RunProgress, listening

if TYPE_CHECKING:
    from tasks.manifest.plan import Plan
    from tasks.run.cost import Price

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # one line, however long

ManifestArg = Annotated[
    str,
    typer.Argument(
        help="Manifest URL: CSV, TSV or JSONL (plain, .gz or .zst), Parquet, "
        "or a folder or glob of Parquet parts."
    ),
]
EndpointOpt = Annotated[EndpointName, typer.Option(help="Removal endpoint.")]
OutputOpt = Annotated[str, typer.Option(help="Output root: path, file://, s3://")]
RunNameOpt = Annotated[str | None, typer.Option(help="Report folder name.")]
MaxInFlightOpt = Annotated[int | None, typer.Option(help="Jobs in flight.")]
SubmitRateOpt = Annotated[float | None, typer.Option(help="Job starts per second.")]
SharedLimitOpt = Annotated[
    str | None, typer.Option(help="Prefect global concurrency limit shared by workers.")
]
TaskRunsOpt = Annotated[
    bool | None, typer.Option("--task-runs/--no-task-runs", help="A task run per job.")
]
BudgetOpt = Annotated[float | None, typer.Option(help="Budget in USD.")]
ResubmitOpt = Annotated[
    bool,
    typer.Option(
        help="fal: submit again jobs whose earlier submit had an unknown outcome "
        "(check the fal dashboard first: they may be billed twice)."
    ),
]
RetryFailedOpt = Annotated[
    bool, typer.Option(help="fal: submit again jobs fal reported as failed earlier.")
]
ResubmitExpiredOpt = Annotated[
    bool,
    typer.Option(
        help="fal: pay again for jobs whose result fal dropped unread (fal_result_expired)."
    ),
]
FalUploadsOpt = Annotated[
    bool | None,
    typer.Option("--fal-uploads/--no-fal-uploads", help="fal: upload local input files."),
]
PresignOpt = Annotated[
    int | None, typer.Option(help="fal: seconds presigned s3:// input URLs stay valid.")
]
StartTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--fal-start-timeout",
        help="fal: give up (unbilled) jobs not started after this many seconds in the queue.",
    ),
]
PriorityOpt = Annotated[
    str | None, typer.Option("--fal-priority", help="fal: queue priority, normal or low.")
]
NoRetryOpt = Annotated[
    bool | None,
    typer.Option("--fal-no-retry/--fal-retry", help="fal: ask fal not to retry failed jobs."),
]
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
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "parameters"
        raise MatteflowError(
            f"{where}: {first['msg']}"
            + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""),
            code=ErrorCode.invalid_params,
        ) from exc


def fail_fast(exc: MatteflowError) -> typer.Exit:
    """A user error: one line with its code and what to do, exit code 2, no traceback."""
    errors.print(user_error_line(exc), markup=False, highlight=False)
    return typer.Exit(2)


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

    def advance(self, row: ResultRow, progress: RunProgress) -> None:
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
        try:
            return await state.aresult(), None  # raises the flow's own error if it failed
        except RunFailed as exc:  # rows failed past fail_when: the report is there all the same
            return exc.summary, None

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
@with_option_flags
def run(
    manifest: ManifestArg,
    endpoint: EndpointOpt = EndpointName.local,
    output: OutputOpt = "./output",
    run_name: RunNameOpt = None,
    max_in_flight: MaxInFlightOpt = None,
    submit_rate: SubmitRateOpt = None,
    shared_limit: SharedLimitOpt = None,
    task_runs: TaskRunsOpt = None,
    budget: BudgetOpt = None,
    resubmit_unknown: ResubmitOpt = False,
    retry_failed: RetryFailedOpt = False,
    resubmit_expired: ResubmitExpiredOpt = False,
    fal_uploads: FalUploadsOpt = None,
    presign_expiry: PresignOpt = None,
    fal_start_timeout: StartTimeoutOpt = None,
    fal_priority: PriorityOpt = None,
    fal_no_retry: NoRetryOpt = None,
    s3_endpoint_url: S3Opt = None,
    config: ConfigOpt = None,
    **options: Any,
) -> None:
    """Remove the background of every video in MANIFEST."""
    quiet_prefect()
    try:
        params = build_params(
            config,
            manifest=manifest,
            endpoint=endpoint,
            output=output,
            run_name=run_name,
            **options,
            max_in_flight=max_in_flight,
            budget_usd=budget,
            resubmit_unknown=resubmit_unknown or None,
            retry_failed=retry_failed or None,
            resubmit_expired=resubmit_expired or None,
            fal_uploads=fal_uploads,
            presign_expiry_s=presign_expiry,
            fal_start_timeout_s=fal_start_timeout,
            fal_priority=fal_priority,
            fal_no_retry=fal_no_retry,
            submit_rate=submit_rate,
            shared_limit=shared_limit,
            task_run_per_job=task_runs,
            s3_endpoint_url=s3_endpoint_url,
        )
        check_run(params.manifest, params.endpoint.value, params.output, params.s3_endpoint_url)
    except MatteflowError as exc:
        raise fail_fast(exc) from None
    if params.run_name is None:
        params = params.model_copy(update={"run_name": params.resolved_run_name()})
    raise typer.Exit(run_and_report(params))


def run_and_report(params: RunParams) -> int:
    """Run the flow, print its summary; the exit code (see the module's docstring)."""
    try:
        summary, cancelled = run_flow(params)
    except MatteflowError as exc:
        errors.print(user_error_line(exc), markup=False, highlight=False)
        return 2
    print_summary(summary)
    if cancelled:
        console.print("[yellow]cancelled[/yellow]: run the same command again to continue")
        return 130
    counts = summary["counts"]
    ok = counts["succeeded"] + counts["skipped"]
    return 0 if ok == summary["rows"] else 1


@app.command()
@with_option_flags
def estimate(
    manifest: ManifestArg,
    endpoint: EndpointOpt = EndpointName.pixelcut,
    s3_endpoint_url: S3Opt = None,
    config: ConfigOpt = None,
    **options: Any,
) -> None:
    """Print what MANIFEST would cost on ENDPOINT, from the inputs' metadata; sends nothing."""
    from tasks.endpoints import endpoint_info
    from tasks.manifest.plan import plan_jobs
    from tasks.manifest.read import read_manifest
    from tasks.run.cost import price_for
    from tasks.run.estimate import estimate_jobs
    from tasks.storage.store import s3_options

    try:
        params = build_params(
            config, manifest=manifest, endpoint=endpoint, s3_endpoint_url=s3_endpoint_url, **options
        )
        info = endpoint_info(params.endpoint)
        s3 = s3_options(params.s3_endpoint_url)
        read = read_manifest(
            params.manifest, info.option_fields, s3 if manifest.startswith("s3://") else None
        )
        price = price_for(info.name.value)
    except MatteflowError as exc:
        raise fail_fast(exc) from None
    except KeyError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    plan = plan_jobs(read, info, params.run_options())
    print_estimate(info.name.value, price, estimate_jobs(plan.jobs, price, s3), plan)


def print_estimate(endpoint: str, price: Price, rows: list[dict[str, Any]], plan: Plan) -> None:
    """One line per job, then the total and the rows that could not be planned."""
    table = Table(title=f"estimate: {endpoint} ({price.unit}, ${price.price_usd})")
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
