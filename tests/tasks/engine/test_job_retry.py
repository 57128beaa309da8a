"""The local runner verifies against the input, and retries a failed output only when asked."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tasks.endpoints.local import LocalOptions
from tasks.engine.job import run_local_job
from tasks.engine.segment import Matte, RGBFrame, Segmenter
from tasks.ledger.jobs import Job, Ledger, job_key
from tasks.media.verify import VerifySettings
from tasks.storage.store import Storage


class FixedSegmenter:
    """A 'model' that returns one matte: nothing, or a centred box."""

    def __init__(self, empty: bool) -> None:
        self.empty = empty

    def __call__(self, rgb: RGBFrame) -> Matte:
        matte = np.zeros(rgb.shape[:2], np.float32)
        if not self.empty:
            h, w = matte.shape
            matte[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
        return matte

    def close(self) -> None:
        pass


def factory(*empties: bool) -> Callable[[], Segmenter]:
    """Segmenters for successive attempts; the last one repeats."""
    queue: Iterator[bool] = iter(empties)
    last = [empties[-1]]

    def make() -> Segmenter:
        last[0] = next(queue, last[0])
        return FixedSegmenter(last[0])

    return make


def make_job(clip: Path) -> Job:
    params = LocalOptions(smoothing=1.0).model_dump(mode="json")
    params["output_format"] = "webm_vp9"
    key = job_key(str(clip), "local", params)
    return Job(key=key, row=0, id="clip", video_url=str(clip), endpoint="local", params=params)


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path / "out"))


def test_erased_subject_fails_verification_and_is_not_retried_by_default(
    clips: dict[str, Path], storage: Storage
) -> None:
    row = run_local_job(make_job(clips["silent"]), storage, segmenter_factory=factory(True, False))
    assert row["status"] == "failed_verification"
    assert row["error_code"] == "matte_empty" and row["verify_reasons"] == "matte_empty"
    assert row["attempts"] == 1 and row["fg_fraction"] == 0.0 and row["verified"] is False
    assert row["output_url"] is None  # a failed output is never stored as a result


def test_retry_once_when_enabled_and_the_reason_is_retryable(
    clips: dict[str, Path], storage: Storage
) -> None:
    job = make_job(clips["silent"])
    settings = VerifySettings(
        retry_failed_verification=True, retry_codes=frozenset({"matte_empty"})
    )
    row = run_local_job(job, storage, segmenter_factory=factory(True, False), settings=settings)
    assert row["status"] == "succeeded" and row["attempts"] == 2
    assert row["error_code"] is None and row["verify_reasons"] == ""
    assert row["fg_fraction"] == pytest.approx(0.25, abs=0.03) and row["flicker"] == 0.0
    entry = Ledger(storage).get(job.key)
    assert entry is not None
    assert [h["event"] for h in entry.history] == ["started", "retry_verification", "succeeded"]


def test_retry_happens_at_most_once(clips: dict[str, Path], storage: Storage) -> None:
    settings = VerifySettings(
        retry_failed_verification=True, retry_codes=frozenset({"matte_empty"})
    )
    row = run_local_job(
        make_job(clips["silent"]), storage, segmenter_factory=factory(True), settings=settings
    )
    assert row["status"] == "failed_verification" and row["attempts"] == 2


def test_non_transient_reason_is_not_retried_even_when_enabled(
    clips: dict[str, Path], storage: Storage
) -> None:
    settings = VerifySettings(retry_failed_verification=True)  # matte_empty is not transient
    row = run_local_job(
        make_job(clips["silent"]),
        storage,
        segmenter_factory=factory(True, False),
        settings=settings,
    )
    assert row["status"] == "failed_verification" and row["attempts"] == 1


def test_a_local_job_opens_its_input_once_for_facts(
    clips: dict[str, Path], storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Preflight, limits and the frame count a correct output must match come from one open;
    the engine's own decode is the only other one (three opens in all before VideoFacts)."""
    src = str(clips["silent"])
    opened: list[str] = []
    real_open = av.open

    def counting_open(target: Any, *args: Any, **kwargs: Any) -> Any:
        if str(target) == src:
            opened.append(traceback.extract_stack(limit=2)[0].filename)
        return real_open(target, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    row = run_local_job(make_job(clips["silent"]), storage, segmenter_factory=factory(False))
    assert row["status"] == "succeeded", row["error"]
    facts_opens = [f for f in opened if f.endswith("tasks/media/facts.py")]
    assert len(facts_opens) == 1 and len(opened) == 2, opened
