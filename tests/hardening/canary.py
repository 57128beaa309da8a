"""Recognisable fake secrets for the whole test session, and scanners that look for them.

The session runs with these as FAL_KEY and AWS_SECRET_ACCESS_KEY (tests/conftest.py); whatever
matteflow writes (files, logs, artifacts, results, ledger, exception text) must not contain them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CANARY_FAL_KEY = "fal-canary-7f3a9c2e51d04b6a"
CANARY_S3_KEY_ID = "s3-canary-key-id"  # an access key id is not secret; set so boto signs
CANARY_S3_SECRET = "s3-canary-secret-b84d0e6f27a1"
CANARIES = (CANARY_FAL_KEY, CANARY_S3_SECRET)


def live_run(markexpr: str = "") -> bool:
    """A run against the real fal.ai (``-m live`` or MATTEFLOW_LIVE=1) keeps the real keys."""
    if os.environ.get("MATTEFLOW_LIVE", "") not in ("", "0"):
        return True
    return "live" in markexpr and "not live" not in markexpr


def canary_env() -> dict[str, str]:
    return {
        "FAL_KEY": CANARY_FAL_KEY,
        "AWS_ACCESS_KEY_ID": CANARY_S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": CANARY_S3_SECRET,
    }


def leaks_in_text(text: str, where: str) -> list[str]:
    return [f"{where}: contains {c[:8]}…" for c in CANARIES if c in text]


def leaks_in_files(root: Path) -> tuple[int, list[str]]:
    """(files scanned, leaks) for every regular file below ``root``, binary files included."""
    needles = [c.encode() for c in CANARIES]
    overlap = max(len(n) for n in needles)
    scanned, leaks = 0, []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        scanned += 1
        try:
            with path.open("rb") as fh:
                tail = b""
                while chunk := fh.read(1 << 20):
                    window = tail + chunk
                    for needle in needles:
                        if needle in window:
                            leaks.append(f"{path}: contains {needle[:8].decode()}…")
                    tail = window[-overlap:]
        except OSError:
            continue
    return scanned, sorted(set(leaks))


def leaks_in_values(values: Iterable[object], where: str) -> list[str]:
    out: list[str] = []
    for value in values:
        out += leaks_in_text(repr(value), where)
    return out
