"""The one error tree of matteflow.

Every error carries a stable ``code`` that ends up in the results table::

    MatteflowError
    ├── ManifestError            the manifest (or one of its rows) cannot be used
    ├── InputError               an input video cannot be fetched or decoded
    ├── EndpointError            the removal endpoint refused or failed a job
    │   ├── RetryableEndpointError   transient: worth another attempt
    │   ├── SubmitOutcomeUnknown     a submit may or may not have been queued: never repeat blindly
    │   └── AuthError                bad or missing credentials: stop the run
    ├── VerificationError        an output failed its checks
    ├── StorageError             object storage refused a read or a write
    ├── BudgetExceeded           the next job would overrun the budget
    └── RunFailed                the run's failed rows passed its tolerance (``fail_when``)

Messages never contain secrets: callers pass URLs through ``redact_url`` first.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every code that can reach a results row's ``error_code``, with its one-line meaning.

    The README's table of codes is checked against this registry (tests/tasks/test_errors.py).
    Members are strings, so a code compares equal to its value in rows read back from files.
    """

    def __new__(cls, value: str, meaning: str = "") -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning  # type: ignore[attr-defined]
        return member

    # The manifest, or one of its rows
    manifest_error = "manifest_error", "the manifest cannot be used"
    manifest_not_found = "manifest_not_found", "no manifest at that path or URL"
    manifest_unreadable = "manifest_unreadable", "the manifest's storage refused the read"
    manifest_format = "manifest_format", "not a CSV, TSV, JSONL or Parquet manifest (or .gz/.zst)"
    manifest_encoding = "manifest_encoding", "the manifest is not UTF-8 (or UTF-16 with a BOM)"
    manifest_empty = "manifest_empty", "the manifest file is empty"
    manifest_no_rows = "manifest_no_rows", "the manifest has a header but no rows"
    manifest_no_video_url = "manifest_no_video_url", "the manifest has no video_url column"
    manifest_duplicate_columns = "manifest_duplicate_columns", "two columns share a name"
    manifest_delimiter = "manifest_delimiter", "the CSV uses another delimiter than a comma"
    manifest_parse = "manifest_parse", "the manifest could not be parsed"
    bad_row = "bad_row", "a ragged CSV line or an unreadable JSONL line"
    missing_video_url = "missing_video_url", "the row's video_url is empty"
    bad_video_url = (
        "bad_video_url",
        "video_url is not text, has control characters or no host, or is not a video path",
    )
    unsupported_scheme = "unsupported_scheme", "video_url has a scheme other than http(s), s3, file"
    invalid_options = "invalid_options", "the row's endpoint options are not valid"
    local_input_refused = "local_input_refused", "a local file this run may not read"
    # Inputs
    input_error = "input_error", "the input video cannot be used"
    input_not_found = "input_not_found", "no input at that URL (404, or no such file)"
    input_forbidden = "input_forbidden", "the input's server refused access (401/403)"
    input_http_error = "input_http_error", "the input's server answered another HTTP error"
    input_unreachable = "input_unreachable", "the input's server could not be reached"
    input_unreadable = "input_unreadable", "the input could not be read"
    input_html = "input_html", "the URL returns a web page, not a video"
    input_empty = "input_empty", "the input file is empty"
    input_undecodable = "input_undecodable", "the input is not a readable video"
    input_no_video = "input_no_video", "the input has no video stream"
    input_no_frames = "input_no_frames", "the input has no decodable video frame"
    input_too_large = "input_too_large", "the input is over MATTEFLOW_INPUT_MAX_BYTES"
    input_too_long = "input_too_long", "the input is over MATTEFLOW_INPUT_MAX_DURATION_S"
    input_too_many_pixels = "input_too_many_pixels", "the input is over MATTEFLOW_INPUT_MAX_PIXELS"
    input_too_many_frames = "input_too_many_frames", "the input is over MATTEFLOW_INPUT_MAX_FRAMES"
    upload_disabled = "upload_disabled", "a local input for fal, with uploads turned off"
    # Endpoints
    endpoint_error = "endpoint_error", "the removal endpoint refused or failed the job"
    endpoint_transient = (
        "endpoint_transient",
        "a transient endpoint error that outlasted its retries",
    )
    submit_unknown = (
        "submit_unknown",
        "a submit may have reached fal: not repeated without --resubmit-unknown",
    )
    auth_error = (
        "auth_error",
        "fal refused the key or the account (401, or 403 locked/invalid key): the run stops",
    )
    fal_http_error = "fal_http_error", "fal answered an HTTP error"
    fal_validation_error = "fal_validation_error", "fal refused the job's input (422)"
    fal_bad_result = "fal_bad_result", "fal's result has no usable video output"
    fal_download_failed = "fal_download_failed", "the output could not be downloaded from fal's CDN"
    fal_request_not_found = "fal_request_not_found", "fal does not know the saved request id"
    fal_timeout = "fal_timeout", "the job did not finish within MATTEFLOW_FAL_JOB_TIMEOUT_S"
    fal_job_error = "fal_job_error", "the job failed at fal"
    fal_forbidden = (
        "fal_forbidden",
        "fal refused this one call (403) without saying the key or account is bad",
    )
    fal_unknown_status = "fal_unknown_status", "fal answered a queue status matteflow does not know"
    fal_start_timeout = (
        "fal_start_timeout",
        "the job did not start within --fal-start-timeout: fal gave it up, unbilled",
    )
    upload_too_large = "upload_too_large", "a local input over fal's upload size limit"
    upload_failed = "upload_failed", "fal's storage refused the upload of a local input"
    fal_result_expired = (
        "fal_result_expired",
        "fal no longer keeps the result of a paid job that was never read: see the dashboard",
    )
    claimed_elsewhere = (
        "claimed_elsewhere",
        "another run holds this job's claim: it may submit it, this run may not",
    )
    # The local engine
    engine_failed = "engine_failed", "the local engine could not process the video"
    missing_extra = "missing_extra", "an optional dependency of the chosen model is not installed"
    model_error = "model_error", "the model's weights could not be loaded or run"
    internal_error = "internal_error", "a matteflow bug: the traceback is in the log"
    # Verification of outputs
    verification_failed = "verification_failed", "the output failed its checks"
    output_missing = "output_missing", "no output file"
    output_empty = "output_empty", "the output file is empty"
    output_not_video = "output_not_video", "the output is not a video"
    output_truncated = "output_truncated", "the output ends early"
    output_undecodable = "output_undecodable", "the output cannot be decoded"
    wrong_container = "wrong_container", "the output's container is not the one asked for"
    wrong_codec = "wrong_codec", "the output's codec is not the one asked for"
    alpha_missing = "alpha_missing", "a transparent output without alpha"
    alpha_unexpected = "alpha_unexpected", "alpha where the output should be opaque"
    frame_count = "frame_count", "the output's frame count differs from the input's"
    wrong_size = "wrong_size", "the output's size differs from what was expected"
    wrong_fps = "wrong_fps", "the output's frame rate differs from the input's"
    wrong_duration = "wrong_duration", "the output's duration differs from the input's"
    matte_empty = "matte_empty", "the matte removed everything"
    matte_full = "matte_full", "the matte removed nothing"
    matte_flicker = "matte_flicker", "the matte flickers from frame to frame"
    mask_undecodable = "mask_undecodable", "the mask video cannot be decoded"
    mask_frame_count = "mask_frame_count", "the mask video's frame count differs from the output's"
    mask_mismatch = "mask_mismatch", "the mask disagrees with the output's alpha"
    # Storage and the run
    storage_error = "storage_error", "object storage refused a read or a write"
    storage_unavailable = "storage_unavailable", "object storage kept failing after retries"
    budget_exceeded = "budget_exceeded", "the job would overrun the run's budget"
    shard_failed = "shard_failed", "the shard's child flow run ended without results"
    cancelled = "cancelled", "the run was cancelled before the job finished"
    invalid_params = "invalid_params", "a run parameter is not valid: the run does not start"
    run_failed = "run_failed", "more rows failed than the run's fail_when allows: it ends Failed"
    error = "error", "an error without a more specific code"


class MatteflowError(Exception):
    """Base of all matteflow errors; ``code`` is stable and machine-readable."""

    code: ErrorCode = ErrorCode.error

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ManifestError(MatteflowError):
    code = ErrorCode.manifest_error


class InputError(MatteflowError):
    code = ErrorCode.input_error


class EndpointError(MatteflowError):
    code = ErrorCode.endpoint_error

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status_code = status_code
        self.error_type = error_type
        self.request_id = request_id


class RetryableEndpointError(EndpointError):
    code = ErrorCode.endpoint_transient


class SubmitOutcomeUnknown(EndpointError):
    """fal has no idempotency key: a submit that may have arrived must not be sent again."""

    code = ErrorCode.submit_unknown


class AuthError(EndpointError):
    code = ErrorCode.auth_error


class VerificationError(MatteflowError):
    code = ErrorCode.verification_failed

    def __init__(self, message: str, *, reasons: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or []


class StorageError(MatteflowError):
    code = ErrorCode.storage_error


class BudgetExceeded(MatteflowError):
    code = ErrorCode.budget_exceeded


class RunFailed(MatteflowError):
    """A run that finished with more failed rows than it tolerates; ``summary`` is its report."""

    code = ErrorCode.run_failed

    def __init__(self, message: str, *, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable with its summary (Prefect may persist a flow's final state data)."""
        return (_run_failed, (self.message, self.summary))


def _run_failed(message: str, summary: dict[str, Any]) -> RunFailed:
    return RunFailed(message, summary=summary)
