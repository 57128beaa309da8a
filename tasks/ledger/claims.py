"""Job claims: at most one run, on any machine, works on (and may pay for) a given job.

A claim is one small object per job, ``{output}/claims/{key}.json``, next to the ledger. A run
takes it before it looks at the job's ledger entry again and before any paid submit:

* absent -> created with a conditional create (S3 ``If-None-Match: *``; local: a hard link,
  which fails when the name exists). Of two runs racing, exactly one create succeeds.
* held by a live run -> this run waits (``wait_s``) for it to be released, then reads the
  ledger again and reuses the other run's outcome; past the wait the row ends
  ``claimed_elsewhere``, naming the run that holds it.
* released, past its lease, or owned by a dead process on this same machine -> taken over with
  a compare-and-swap on the version read (S3 ``If-Match: ETag``; local: ``flock`` + compare).

The holder renews the lease while the job runs, and once more right before a submit: a run that
lost its claim (paused past the lease and taken over) finds out there and does not submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.errors import ErrorCode, MatteflowError
from tasks.run.cpu import to_thread
from tasks.storage.store import Storage

log = logging.getLogger("matteflow.claims")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class ClaimSettings(BaseSettings):
    """How long a claim lasts without renewal, and how long a run waits for another's."""

    model_config = SettingsConfigDict(env_prefix="MATTEFLOW_CLAIM_", extra="ignore")

    lease_s: float = Field(
        300.0, gt=1, description="A claim not renewed for this long may be taken over."
    )
    wait_s: float = Field(
        3600.0,
        ge=0,
        description="How long a job waits for another run's claim before its row ends "
        "claimed_elsewhere (0: at once).",
    )
    poll_s: float = Field(2.0, gt=0, description="How often a waiting job looks at the claim.")


@cache
def boot_id() -> str:
    """This machine's boot: a pid is meaningful only on the same host and the same boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds a claim: a run (its name), on a host, in a process; ``token`` is unique."""

    run: str
    host: str = field(default_factory=socket.gethostname)
    boot: str = field(default_factory=boot_id)
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


class ClaimRecord(BaseModel):
    """The claim object as stored."""

    key: str
    held: bool = True
    run: str
    host: str
    boot: str = ""
    pid: int
    token: str
    taken_at: str
    renewed_at: str
    expires_at: float  # Unix time

    @classmethod
    def of(cls, key: str, owner: ClaimOwner, now: float, lease_s: float) -> ClaimRecord:
        stamp = iso(now)
        lease = {"taken_at": stamp, "renewed_at": stamp, "expires_at": now + lease_s}
        return cls(key=key, **asdict(owner), **lease)

    def owner_dead(self) -> bool:
        """The owner is known dead: a process of this machine (same boot) that is gone."""
        here = self.host == socket.gethostname() and self.boot == boot_id() and bool(self.boot)
        return here and not process_alive(self.pid)

    def live(self, now: float) -> bool:
        return self.held and self.expires_at > now and not self.owner_dead()

    def describe(self) -> str:
        return (
            f"run {self.run!r} (host {self.host}, pid {self.pid}) since {self.taken_at}, "
            f"lease until {iso(self.expires_at)}"
        )


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class ClaimHeld(MatteflowError):
    """Another run holds the job's claim; it names that run."""

    code = ErrorCode.claimed_elsewhere

    def __init__(self, message: str, holder: ClaimRecord | None = None) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass
class Claim:
    """A claim this run holds: the stored record and the version to compare against."""

    key: str
    etag: str
    record: ClaimRecord
    lost: ClaimRecord | None = None  # set when a renewal found another run's claim


class Claims:
    """Take, renew and release job claims under ``claims/`` in one output storage."""

    def __init__(
        self,
        storage: Storage,
        owner: ClaimOwner,
        settings: ClaimSettings | None = None,
        *,
        clock: Clock = time.time,
    ) -> None:
        self.storage = storage
        self.owner = owner
        self.settings = settings or ClaimSettings()
        self.clock = clock

    @staticmethod
    def rel(key: str) -> str:
        return f"claims/{key}.json"

    def read(self, key: str) -> tuple[ClaimRecord, str] | None:
        found = self.storage.read_json_tagged(self.rel(key))
        return None if found is None else (ClaimRecord.model_validate(found[0]), found[1])

    def _fresh(self, key: str) -> ClaimRecord:
        return ClaimRecord.of(key, self.owner, self.clock(), self.settings.lease_s)

    def take(self, key: str) -> Claim | ClaimRecord:
        """One attempt: our claim, or the record of the live claim another run holds."""
        for _ in range(3):  # each loop follows a race that another run just won
            found = self.read(key)
            if found is None:
                record = self._fresh(key)
                etag = self.storage.create_json(self.rel(key), _dump(record))
                if etag is not None:
                    return Claim(key, etag, record)
                continue
            current, etag = found
            if current.held and current.token == self.owner.token:
                return Claim(key, etag, current)  # ours (a create whose answer was lost)
            if current.live(self.clock()):
                return current
            record = self._fresh(key)
            new = self.storage.replace_json(self.rel(key), _dump(record), etag)
            if new is not None:
                if current.held:
                    log.warning("took over the claim on %s from %s", key, current.describe())
                return Claim(key, new, record)
        found = self.read(key)
        if found is not None and found[0].token == self.owner.token:
            return Claim(key, found[1], found[0])
        if found is not None:
            return found[0]
        raise ClaimHeld(f"claim on job {key} keeps changing hands; try again")

    def renew(self, claim: Claim) -> Claim:
        """Extend the lease; raises ``ClaimHeld`` when another run took the claim meanwhile."""
        now = self.clock()
        record = claim.record.model_copy(
            update={"renewed_at": iso(now), "expires_at": now + self.settings.lease_s}
        )
        etag = self.storage.replace_json(self.rel(claim.key), _dump(record), claim.etag)
        if etag is None:
            found = self.read(claim.key)
            holder = found[0] if found is not None else None
            if holder is not None and holder.token == self.owner.token and holder.held:
                claim.etag, claim.record = found[1], holder  # type: ignore[index]
                return self.renew(claim)  # our own earlier write, whose answer was lost
            claim.lost = holder
            shown = holder.describe() if holder else "nobody (the claim is gone)"
            raise ClaimHeld(f"this run lost its claim on job {claim.key} to {shown}", holder)
        claim.etag, claim.record = etag, record
        return claim

    def release(self, claim: Claim) -> None:
        """Mark the claim free (kept as an object: a later take needs no create race)."""
        if claim.lost is not None:
            return
        record = claim.record.model_copy(update={"held": False, "renewed_at": iso(self.clock())})
        if self.storage.replace_json(self.rel(claim.key), _dump(record), claim.etag) is None:
            log.warning("claim on %s changed hands before its release", claim.key)


def _dump(record: ClaimRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


async def acquire(claims: Claims, key: str, *, sleep: Sleep = asyncio.sleep) -> Claim:
    """Our claim on ``key``, after waiting (up to ``wait_s``) for another run to release it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + claims.settings.wait_s
    while True:
        got = await to_thread(claims.take, key)
        if isinstance(got, Claim):
            return got
        if loop.time() >= deadline:
            waited = (
                f" after waiting {claims.settings.wait_s:.0f} s" if claims.settings.wait_s else ""
            )
            raise ClaimHeld(
                f"another run holds this job{waited}: {got.describe()}; this run did not "
                "submit it (re-run when that run has ended)",
                got,
            )
        await sleep(min(claims.settings.poll_s, max(0.0, deadline - loop.time())))


class HeldClaim:
    """A claim held for one job: renewed in the background, confirmed right before a submit."""

    def __init__(self, claims: Claims, claim: Claim) -> None:
        self.claims = claims
        self.claim = claim

    async def confirm(self) -> None:
        """Renew now; raises ``ClaimHeld`` if another run has taken the claim."""
        await to_thread(self.claims.renew, self.claim)

    async def keep_renewed(self) -> None:
        interval = self.claims.settings.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.confirm()
            except ClaimHeld:
                log.error("lost the claim on %s: %s", self.claim.key, self.claim.lost)
                return
            except MatteflowError as exc:  # storage away: try again at the next interval
                log.warning("renewing the claim on %s failed: %s", self.claim.key, exc)


@asynccontextmanager
async def held_claim(
    claims: Claims, key: str, *, sleep: Sleep = asyncio.sleep
) -> AsyncIterator[HeldClaim]:
    """Hold the claim on ``key`` for the body (waiting for another run first if needed)."""
    held = HeldClaim(claims, await acquire(claims, key, sleep=sleep))
    renewer = asyncio.create_task(held.keep_renewed(), name=f"matteflow-claim-{key[:8]}")
    try:
        yield held
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        try:
            await to_thread(claims.release, held.claim)
        except MatteflowError as exc:  # the lease runs out on its own
            log.warning("releasing the claim on %s failed: %s", key, exc)
