"""Models load once per process and go from job to job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.endpoints.local import LocalOptions
from tasks.engine import models
from tasks.engine.pipeline import remove_background
from tasks.engine.segment import Segmenter
from tasks.errors import InputError
from tests.tasks.engine.support import Ellipse


class Built(Ellipse):
    closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Built]]:
    made: list[Built] = []

    def build(options: LocalOptions) -> Segmenter:
        made.append(Built())
        return made[-1]

    models.close_idle_segmenters()
    monkeypatch.setattr(models, "build_segmenter", build)
    yield made
    models.close_idle_segmenters()


def test_the_second_job_reuses_the_first_jobs_model(
    builds: list[Built], clips: dict[str, Path], tmp_path: Path
) -> None:
    for i in range(3):
        remove_background(clips["silent"], tmp_path / f"{i}.webm", LocalOptions())
    assert len(builds) == 1 and not builds[0].closed
    remove_background(clips["silent"], tmp_path / "l.webm", LocalOptions(model="selfie_landscape"))  # type: ignore[arg-type]
    assert len(builds) == 2  # another model, another instance


def test_jobs_at_once_get_their_own(builds: list[Built]) -> None:
    with models.pooled_segmenter(LocalOptions()) as a, models.pooled_segmenter(LocalOptions()) as b:
        assert a is not b
    with models.pooled_segmenter(LocalOptions()) as c:
        assert c in (a, b)
    assert len(builds) == 2


def test_a_model_that_failed_is_not_reused_but_a_bad_input_does_not_count(
    builds: list[Built],
) -> None:
    with pytest.raises(InputError), models.pooled_segmenter(LocalOptions()):
        raise InputError("bad input")
    with pytest.raises(RuntimeError), models.pooled_segmenter(LocalOptions()) as seg:
        raise RuntimeError("model broke")
    assert seg is builds[0] and seg.closed
    with models.pooled_segmenter(LocalOptions()) as fresh:
        assert fresh is not seg
    assert len(builds) == 2
