"""Job claims: one holder at a time on a local folder, in memory and on a real S3 (SeaweedFS);
leases that run out and dead owners are taken over; a run that lost its claim finds out."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tasks.ledger.claims import (
    Claim,
    ClaimHeld,
    ClaimOwner,
    ClaimRecord,
    Claims,
    ClaimSettings,
    acquire,
    held_claim,
)
from tasks.storage.store import Storage
from tests.fakes.seaweed import SeaweedS3

KEY = "k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def claims_for(storage: Storage, run: str, clock: Clock | None = None, **kw: float) -> Claims:
    settings = ClaimSettings.model_validate({"lease_s": 60.0, "wait_s": 0.0, "poll_s": 0.01, **kw})
    return Claims(storage, ClaimOwner(run=run), settings, clock=clock or Clock())


@pytest.fixture(params=["local", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "out"))
    return Storage(f"memory://claims-{tmp_path.name}")


def test_one_holder_then_released_and_taken(storage: Storage) -> None:
    a, b = claims_for(storage, "nightly"), claims_for(storage, "by-hand")
    mine = a.take(KEY)
    assert isinstance(mine, Claim)
    theirs = b.take(KEY)
    assert isinstance(theirs, ClaimRecord) and theirs.run == "nightly"
    assert "run 'nightly'" in theirs.describe()
    assert isinstance(a.take(KEY), Claim)  # asking again is harmless: still ours
    a.release(mine)
    taken = b.take(KEY)
    assert isinstance(taken, Claim) and taken.record.run == "by-hand"
    assert isinstance(a.take(KEY), ClaimRecord)


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_renew(storage: Storage) -> None:
    clock = Clock()
    a, b = claims_for(storage, "a", clock), claims_for(storage, "b", clock)
    old = a.take(KEY)
    assert isinstance(old, Claim)
    clock.now += 30
    a.renew(old)  # renewed: the lease runs from now
    clock.now += 59
    assert isinstance(b.take(KEY), ClaimRecord)
    clock.now += 2
    new = b.take(KEY)
    assert isinstance(new, Claim)
    with pytest.raises(ClaimHeld, match=r"lost its claim .* run 'b'"):
        a.renew(old)
    a.release(old)  # a lost claim is not released over the new holder's
    assert isinstance(a.take(KEY), ClaimRecord)


def test_a_dead_process_on_this_machine_loses_its_claim_at_once(storage: Storage) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = ClaimOwner(run="killed", pid=int(done.stdout))
    settings = ClaimSettings(lease_s=3600.0, wait_s=0.0)
    assert isinstance(Claims(storage, dead, settings).take(KEY), Claim)
    alive = ClaimOwner(run="alive-elsewhere", host="another-host")
    Claims(storage, alive, settings).take("x" * 32)
    me = claims_for(storage, "rerun")
    assert isinstance(me.take(KEY), Claim)  # same host, same boot, pid gone
    assert isinstance(me.take("x" * 32), ClaimRecord)  # another host: only its lease counts


@pytest.mark.parametrize("where", ["local", "memory"])
def test_racing_takers_get_exactly_one_claim(where: str, tmp_path: Path) -> None:
    root = str(tmp_path / "out") if where == "local" else f"memory://race-{tmp_path.name}"
    assert race(Storage(root), 8) == 1


def race(storage: Storage, n: int) -> int:
    results: list[Claim | ClaimRecord] = []
    start = threading.Barrier(n)

    def take(i: int) -> None:
        claims = claims_for(storage, f"run{i}")
        start.wait()
        results.append(claims.take(KEY))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holders = {r.record.run if isinstance(r, Claim) else r.run for r in results}
    assert len(holders) == 1, holders  # every loser names the winner
    return sum(isinstance(r, Claim) for r in results)


async def test_a_waiting_run_gets_the_claim_when_it_is_released(storage: Storage) -> None:
    a = claims_for(storage, "first")
    b = claims_for(storage, "second", wait_s=30.0)
    mine = a.take(KEY)
    assert isinstance(mine, Claim)
    polls = 0

    async def sleep(_: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 3:
            await asyncio.to_thread(a.release, mine)

    got = await acquire(b, KEY, sleep=sleep)
    assert got.record.run == "second" and polls == 3


async def test_no_wait_ends_with_the_holders_name(storage: Storage) -> None:
    assert isinstance(claims_for(storage, "nightly-2026-12-01").take(KEY), Claim)
    with pytest.raises(ClaimHeld, match="nightly-2026-12-01") as info:
        await acquire(claims_for(storage, "manual"), KEY)
    assert info.value.code == "claimed_elsewhere"


async def test_held_claim_is_released_at_exit_and_confirm_notices_a_takeover(
    storage: Storage,
) -> None:
    clock = Clock()
    a, b = claims_for(storage, "a", clock), claims_for(storage, "b", clock)
    async with held_claim(a, KEY) as held:
        await held.confirm()
        clock.now += 120  # paused past its lease: b takes over
        assert isinstance(b.take(KEY), Claim)
        with pytest.raises(ClaimHeld):
            await held.confirm()
    found = b.read(KEY)
    assert found is not None and found[0].run == "b" and found[0].held


@pytest.mark.integration
def test_claims_on_a_real_s3(seaweed: SeaweedS3, s3_bucket: str) -> None:
    storage = Storage(f"{s3_bucket}/out", seaweed.storage_options())
    assert race(storage, 6) == 1
    clock = Clock()
    winner = claims_for(storage, "run0", clock)
    found = winner.read(KEY)
    assert found is not None
    other = claims_for(storage, "late", clock)
    assert isinstance(other.take(KEY), ClaimRecord)
    clock.now += 61
    assert isinstance(other.take(KEY), Claim)  # If-Match on the ETag read
    stale = Claim(KEY, found[1], found[0])
    with pytest.raises(ClaimHeld):
        winner.renew(stale)
