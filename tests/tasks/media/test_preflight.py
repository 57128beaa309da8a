"""Preflight pieces without a network: limits, the local-input policy, file sniffing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import InputError
from tasks.media.facts import VideoFacts
from tasks.media.preflight import (
    InputSettings,
    LocalInputPolicy,
    check_limits,
    sniff_file,
)


def facts(**kw: object) -> VideoFacts:
    values: dict[str, object] = dict(
        bytes=1000,
        width=64,
        height=48,
        fps=10.0,
        duration_s=1.0,
        frames=10,
        frames_exact=True,
        video_streams=1,
        has_audio=False,
        codec="h264",
    )
    values.update(kw)
    return VideoFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limit", "fact", "code"),
    [
        ({"max_bytes": 999}, {}, "input_too_large"),
        ({"max_duration_s": 0.5}, {}, "input_too_long"),
        ({"max_pixels": 64 * 48 - 1}, {}, "input_too_many_pixels"),
        ({"max_frames": 9}, {}, "input_too_many_frames"),
    ],
)
def test_each_limit_refuses_with_its_own_code(
    limit: dict[str, float], fact: dict[str, object], code: str
) -> None:
    check_limits(facts(), InputSettings(), "x.mp4")  # within the defaults
    with pytest.raises(InputError) as info:
        check_limits(facts(**fact), InputSettings(**limit), "x.mp4")  # type: ignore[arg-type]
    assert info.value.code == code and "MATTEFLOW_INPUT_" in str(info.value)


def test_policy_allows_remote_urls_and_allowed_roots_only(tmp_path: Path) -> None:
    policy = LocalInputPolicy(False, (tmp_path.resolve(),))
    assert policy.refusal("https://e.com/a.mp4") is None
    assert policy.refusal("s3://b/a.mp4") is None
    assert policy.refusal(str(tmp_path / "a.mp4")) is None
    assert policy.refusal(f"file://{tmp_path}/a.mp4") is None
    assert policy.refusal("/etc/x.mp4") is not None
    assert policy.refusal(f"{tmp_path}/../x.mp4") is not None
    assert LocalInputPolicy(True).refusal("/etc/x.mp4") is None


def test_sniff_refuses_empty_and_html_files(tmp_path: Path) -> None:
    empty, page, video = tmp_path / "e.mp4", tmp_path / "p.mp4", tmp_path / "v.mp4"
    empty.write_bytes(b"")
    page.write_bytes(b"  \n<!DOCTYPE HTML><html><body>sign in</body></html>")
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    for path, code in ((empty, "input_empty"), (page, "input_html")):
        with pytest.raises(InputError) as info:
            sniff_file(path, InputSettings())
        assert info.value.code == code
    assert sniff_file(video, InputSettings()) == video.stat().st_size
