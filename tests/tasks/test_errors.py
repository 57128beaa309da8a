"""The registry of error codes: every code has a meaning, and the README's table matches it."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.errors import (
    AuthError,
    EndpointError,
    ErrorCode,
    MatteflowError,
    StorageError,
    VerificationError,
)

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `([a-z0-9_]+)` \| (.+) \|$")


def readme_codes() -> dict[str, str]:
    """code -> meaning from the table under README's "## Error codes" heading."""
    text = README.read_text()
    section = text.split("\n## Error codes\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} is listed twice"
            found[match.group(1)] = match.group(2)
    return found


def test_readme_table_and_registry_agree_exactly() -> None:
    registry = {code.value: code.meaning for code in ErrorCode}
    assert readme_codes() == registry


def test_every_code_has_a_one_line_meaning() -> None:
    for code in ErrorCode:
        assert code.meaning and "\n" not in code.meaning, code
        assert code.value == code.name  # the stored string is the member's name


def test_errors_carry_registry_codes() -> None:
    assert MatteflowError("x").code is ErrorCode.error
    assert isinstance(StorageError("x").code, ErrorCode)
    assert AuthError("x").code is ErrorCode.auth_error
    assert VerificationError("x").code is ErrorCode.verification_failed
    raised = EndpointError("x", code=ErrorCode.fal_timeout)
    assert raised.code == "fal_timeout"  # a StrEnum compares equal to its value in files
