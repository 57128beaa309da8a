"""Turn manifest rows into jobs: merge run options with row overrides, validate, key, dedupe."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tasks.endpoints import EndpointInfo
from tasks.errors import ErrorCode
from tasks.ledger.jobs import Job, Status, job_key
from tasks.ledger.results import ResultRow, ended_row
from tasks.manifest.read import Manifest, ManifestRow
from tasks.media.preflight import LocalInputPolicy


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    invalid: list[ResultRow] = field(default_factory=list)
    duplicates: dict[int, str] = field(default_factory=dict)  # row -> job key it repeats


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field, without echoing whole inputs."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "options"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def resolve_params(
    info: EndpointInfo, run_options: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Validated, fully resolved options of one row; raises ``ValidationError``."""
    merged = {k: v for k, v in run_options.items() if v is not None}
    merged.update(overrides)
    if "background" in overrides and "background_color" not in overrides:
        merged.pop("background_color", None)  # a row's own background wins over the run's colour
    options = info.options_model.model_validate(merged)
    params = options.model_dump(mode="json")
    params["output_format"] = info.output_format(options).value
    return params


def plan_jobs(
    manifest: Manifest,
    info: EndpointInfo,
    run_options: dict[str, Any],
    *,
    local_inputs: LocalInputPolicy | None = None,
) -> Plan:
    """Jobs for the valid rows; ``local_inputs`` (None: any) says which local files may be read."""
    plan = Plan()
    seen: dict[str, Job] = {}
    resolved: dict[str, dict[str, Any] | str] = {}
    endpoint = info.name.value

    def refused(row: ManifestRow, code: ErrorCode, error: str) -> ResultRow:
        return ended_row(row, Status.invalid, code, error, endpoint=endpoint)

    for row in manifest.rows:
        if row.error_code:
            plan.invalid.append(refused(row, row.error_code, row.error or ""))
            continue
        refusal = local_inputs.refusal(row.video_url) if local_inputs is not None else None
        if refusal is not None:
            plan.invalid.append(refused(row, ErrorCode.local_input_refused, refusal))
            continue
        # Catalog rows repeat a few option combinations: validate each combination once.
        combo = json.dumps(row.overrides, sort_keys=True, default=str)
        if combo not in resolved:
            try:
                resolved[combo] = resolve_params(info, run_options, row.overrides)
            except ValidationError as exc:
                resolved[combo] = describe_validation_error(exc)
        params = resolved[combo]
        if isinstance(params, str):
            plan.invalid.append(refused(row, ErrorCode.invalid_options, params))
            continue
        key = job_key(row.video_url, endpoint, params)
        if key in seen:
            plan.duplicates[row.row] = key
            continue
        job = Job(
            key=key,
            row=row.row,
            id=row.id,
            video_url=row.video_url,
            endpoint=endpoint,
            params=params,
        )
        seen[key] = job
        plan.jobs.append(job)
    return plan
