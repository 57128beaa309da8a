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
    └── BudgetExceeded           the next job would overrun the budget

Messages never contain secrets: callers pass URLs through ``redact_url`` first.
"""

from __future__ import annotations


class MatteflowError(Exception):
    """Base of all matteflow errors; ``code`` is stable and machine-readable."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ManifestError(MatteflowError):
    code = "manifest_error"


class InputError(MatteflowError):
    code = "input_error"


class EndpointError(MatteflowError):
    code = "endpoint_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status_code = status_code
        self.error_type = error_type


class RetryableEndpointError(EndpointError):
    code = "endpoint_transient"


class SubmitOutcomeUnknown(EndpointError):
    """fal has no idempotency key: a submit that may have arrived must not be sent again."""

    code = "submit_unknown"


class AuthError(EndpointError):
    code = "auth_error"


class VerificationError(MatteflowError):
    code = "verification_failed"

    def __init__(self, message: str, *, reasons: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or []


class StorageError(MatteflowError):
    code = "storage_error"


class BudgetExceeded(MatteflowError):
    code = "budget_exceeded"
