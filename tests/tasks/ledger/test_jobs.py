from __future__ import annotations

from tasks.ledger.jobs import JobState, Ledger, LedgerEntry, job_key, safe_stem
from tasks.storage.store import Storage


def test_job_key_is_stable_and_depends_on_every_input() -> None:
    base = job_key("https://e.com/a.mp4", "local", {"background": "transparent", "x": 1})
    assert base == job_key("https://e.com/a.mp4", "local", {"x": 1, "background": "transparent"})
    assert base != job_key("https://e.com/b.mp4", "local", {"background": "transparent", "x": 1})
    assert base != job_key("https://e.com/a.mp4", "pixelcut", {"background": "transparent", "x": 1})
    assert base != job_key("https://e.com/a.mp4", "local", {"background": "white", "x": 1})


def test_safe_stem_never_escapes_the_prefix() -> None:
    for hostile in ("../../etc/passwd", "/abs/path", "a/b\\c", "..", "", "名前 with spaces"):
        stem = safe_stem(hostile, "0123456789abcdef")
        assert "/" not in stem and "\\" not in stem and not stem.startswith(".")
        assert stem.endswith("0123456789ab")


def test_ledger_round_trip_in_memory_storage() -> None:
    ledger = Ledger(Storage("memory://ledger-test"))
    key = job_key("u", "local", {})
    assert ledger.get(key) is None
    entry = LedgerEntry(key=key, endpoint="local", video_url="u", params={})
    entry.state = JobState.submitted
    entry.request_id = "req-1"
    ledger.put(entry, event="submitted")
    back = ledger.get(key)
    assert back is not None
    assert back.state is JobState.submitted and back.request_id == "req-1"
    assert back.history[-1]["event"] == "submitted"
