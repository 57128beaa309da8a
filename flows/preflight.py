"""What a run checks before Prefect starts: its manifest can be read and its output used.

The CLI calls ``check_run`` first, so a user error costs a second, not the temporary server's
start, and prints one line saying what to do; the flow runs the same reads and ends Failed with
that line when started from the UI. Nothing here imports Prefect.
"""

from __future__ import annotations

from tasks.endpoints import endpoint_info
from tasks.errors import ErrorCode, MatteflowError
from tasks.manifest.read import Manifest, read_manifest
from tasks.storage.store import Storage, s3_options

# What to do about each user error whose message does not already say it.
HINTS: dict[ErrorCode, str] = {
    ErrorCode.manifest_not_found: "check the path or URL (and --s3-endpoint-url for S3 stores)",
    ErrorCode.manifest_unreadable: "check the storage's address and credentials",
    ErrorCode.manifest_empty: "give a header line, then one row per video",
    ErrorCode.manifest_no_rows: "add one row per video under the header",
    ErrorCode.manifest_no_video_url: "name the column of input URLs video_url",
    ErrorCode.manifest_duplicate_columns: "rename or drop the repeated columns",
    ErrorCode.manifest_parse: "export the manifest again",
    ErrorCode.local_input_refused: "put the manifest in object storage, or run it with the CLI",
    ErrorCode.storage_error: "check --output and the storage's credentials",
    ErrorCode.storage_unavailable: "check that the storage is reachable, then run again",
    ErrorCode.invalid_params: "see matteflow run --help",
}


def hint_for(exc: MatteflowError) -> str:
    return HINTS.get(exc.code, "")


def user_error_line(exc: MatteflowError) -> str:
    """The one line a user error is shown as, in a terminal and in a flow run's log."""
    hint = hint_for(exc)
    return f"error ({exc.code}): {exc}" + (f"; {hint}" if hint else "")


def output_storage(url: str, s3_endpoint_url: str | None) -> Storage:
    options = s3_options(s3_endpoint_url) if url.startswith("s3://") else None
    return Storage(url, options, input_options=s3_options(s3_endpoint_url))


def manifest_for(url: str, endpoint: str, s3_endpoint_url: str | None) -> Manifest:
    """The manifest, read and validated; ``ManifestError`` when it cannot be used at all."""
    options = s3_options(s3_endpoint_url) if url.startswith("s3://") else None
    return read_manifest(url, endpoint_info(endpoint).option_fields, options)


def check_run(manifest: str, endpoint: str, output: str, s3_endpoint_url: str | None) -> None:
    """Raise the ``MatteflowError`` that would stop this run, before anything starts."""
    manifest_for(manifest, endpoint, s3_endpoint_url)
    output_storage(output, s3_endpoint_url)  # a local output folder is created here
