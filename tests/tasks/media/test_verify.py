"""Verification against a corpus of outputs whose faults are known by construction."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tasks.errors import ErrorCode
from tasks.media.facts import VideoFacts, read_video_facts
from tasks.media.formats import OutputFormat, spec_for
from tasks.media.verify import (
    TRANSIENT_CODES,
    Expectation,
    VerifySettings,
    should_retry_verification,
    verify_mask,
    verify_output,
)
from tests.fakes.outputs import (
    GREEN,
    ellipse_matte,
    empty_matte,
    full_matte,
    good_corpus,
    truncate,
    write_mask,
    write_output,
)


@pytest.fixture(scope="module")
def source(clips: dict[str, Path]) -> Path:
    return clips["silent"]


@pytest.fixture(scope="module")
def src_probe(source: Path) -> VideoFacts:
    return read_video_facts(source, scan=True)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def good(source: Path, corpus_dir: Path) -> dict[str, tuple[Path, OutputFormat, bool]]:
    return good_corpus(source, corpus_dir)


def expect(fmt: OutputFormat | str, transparent: bool, src: VideoFacts, **kw: Any) -> Expectation:
    bg = None if transparent else GREEN
    return Expectation.from_input(spec_for(fmt), transparent, src, background_rgb=bg, **kw)


def test_input_probe_counts_frames_without_decoding(src_probe: VideoFacts) -> None:
    # The clips fixture writes 0.4 s at 20 fps, 64x48.
    assert (src_probe.frames, src_probe.width, src_probe.height) == (8, 64, 48)
    assert src_probe.fps == 20.0 and src_probe.duration_s == pytest.approx(0.4)
    assert not src_probe.variable_frame_rate


MODES = [VerifySettings(mode="sampled"), VerifySettings(mode="full")]


@pytest.mark.parametrize("settings", MODES, ids=lambda s: s.mode)
@pytest.mark.parametrize(
    "name",
    [f.value for f in OutputFormat]
    + [f"opaque_{f.value}" for f in OutputFormat if spec_for(f).carries_alpha],
)
def test_good_outputs_of_every_format_pass(
    name: str,
    settings: VerifySettings,
    good: dict[str, tuple[Path, OutputFormat, bool]],
    src_probe: VideoFacts,
) -> None:
    path, fmt, transparent = good[name]
    report = verify_output(path, expect(fmt, transparent, src_probe), settings)
    assert report.ok, report.reasons
    assert report.probe is not None
    assert report.probe.frames == src_probe.frames
    assert report.probe.has_alpha is transparent
    assert report.bytes == path.stat().st_size and len(report.sha256) == 64
    # The ellipse matte covers about 30% of the frame and moves a pixel a frame.
    assert report.probe.fg_fraction == pytest.approx(0.31, abs=0.05)
    assert report.probe.flicker is not None and 0.005 < report.probe.flicker < 0.1


def bad_case(name: str, source: Path, d: Path) -> tuple[Path, Expectation, str]:
    """Build one broken output; return it, what was asked for, and the reason it must get."""
    src = read_video_facts(source, scan=True)
    webm = OutputFormat.webm_vp9
    if name.startswith("truncated_"):
        fmt = OutputFormat(name.removeprefix("truncated_"))
        spec = spec_for(fmt)
        whole = write_output(
            source, d / f"whole_{fmt.value}{spec.extension}", fmt, transparent=spec.carries_alpha
        )
        path = truncate(whole, d / f"{name}{spec.extension}")
        return path, expect(fmt, spec.carries_alpha, src), ErrorCode.output_truncated
    if name.startswith("alpha_stripped_"):
        fmt = OutputFormat(name.removeprefix("alpha_stripped_"))
        path = write_output(
            source, d / f"{name}{spec_for(fmt).extension}", fmt, transparent=True, keep_alpha=False
        )
        return path, expect(fmt, True, src), ErrorCode.alpha_missing
    if name == "frame_missing":
        path = write_output(source, d / "missing.webm", webm, transparent=True, drop_frame=3)
        return path, expect(webm, True, src), ErrorCode.frame_count
    if name == "wrong_size":
        path = write_output(source, d / "small.webm", webm, transparent=True, size=(32, 24))
        return path, expect(webm, True, src), ErrorCode.wrong_size
    if name == "not_a_video":
        path = d / "not_a_video.webm"
        path.write_text("<html><body>502 Bad Gateway</body></html>\n")
        return path, expect(webm, True, src), ErrorCode.output_not_video
    if name == "still_image":
        path = d / "still.webm"
        frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
        frame.to_image().save(path, format="PNG")
        return path, expect(webm, True, src), ErrorCode.output_not_video
    if name == "all_transparent":
        path = write_output(source, d / "empty.webm", webm, transparent=True, matte=empty_matte)
        return path, expect(webm, True, src), ErrorCode.matte_empty
    if name == "all_opaque":
        path = write_output(source, d / "full.webm", webm, transparent=True, matte=full_matte)
        return path, expect(webm, True, src), ErrorCode.matte_full
    if name == "all_background_mp4":
        mp4 = OutputFormat.mp4_h264
        path = write_output(source, d / "bg.mp4", mp4, transparent=False, matte=empty_matte)
        return path, expect(mp4, False, src), ErrorCode.matte_empty
    if name == "wrong_codec_hevc_for_h264":
        mp4 = OutputFormat.mp4_h264
        path = write_output(source, d / "hevc.mp4", OutputFormat.mp4_h265, transparent=False)
        return path, expect(mp4, False, src), ErrorCode.wrong_codec
    if name == "wrong_codec_h264_for_vp9":
        path = write_output(source, d / "h264.mkv", OutputFormat.mkv_h264, transparent=False)
        return path, expect(OutputFormat.mkv_vp9, False, src), ErrorCode.wrong_codec
    if name == "wrong_codec_vp8_for_vp9":
        path = write_output(source, d / "vp8.webm", webm, transparent=False, codec="libvpx")
        return path, expect(webm, False, src), ErrorCode.wrong_codec
    if name == "wrong_container_mkv_for_webm":
        path = write_output(source, d / "vp9.mkv", OutputFormat.mkv_vp9, transparent=True)
        return path, expect(webm, True, src), ErrorCode.wrong_container
    if name == "empty_file":
        path = d / "empty_file.webm"
        path.write_bytes(b"")
        return path, expect(webm, True, src), ErrorCode.output_empty
    if name == "missing_file":
        return d / "never_written.webm", expect(webm, True, src), ErrorCode.output_missing
    raise AssertionError(name)


BAD = [
    "truncated_webm_vp9",
    "truncated_mkv_vp9",
    "truncated_mp4_h264",
    "truncated_mov_proresks",
    "truncated_gif",
    "alpha_stripped_webm_vp9",
    "alpha_stripped_mov_proresks",
    "alpha_stripped_gif",
    "frame_missing",
    "wrong_size",
    "not_a_video",
    "still_image",
    "all_transparent",
    "all_opaque",
    "all_background_mp4",
    "wrong_codec_hevc_for_h264",
    "wrong_codec_h264_for_vp9",
    "wrong_codec_vp8_for_vp9",
    "wrong_container_mkv_for_webm",
    "empty_file",
    "missing_file",
]


@pytest.mark.parametrize("settings", MODES, ids=lambda s: s.mode)
@pytest.mark.parametrize("name", BAD)
def test_bad_outputs_are_flagged_with_their_reason(
    name: str, settings: VerifySettings, source: Path, corpus_dir: Path
) -> None:
    path, expected, code = bad_case(name, source, corpus_dir)
    report = verify_output(path, expected, settings)
    assert not report.ok
    assert code in report.codes, report.reasons
    assert all(text for _, text in report.reasons)
    assert report.error_code == report.codes[0]  # one code; codes lists every reason


@pytest.mark.parametrize("fmt", ["webm_vp9", "mp4_h264"])
def test_audio_outlasting_the_video_is_not_mistaken_for_truncation(
    fmt: str, source: Path, corpus_dir: Path
) -> None:
    spec = spec_for(fmt)
    path = write_output(
        source,
        corpus_dir / f"long_audio{spec.extension}",
        fmt,
        transparent=spec.carries_alpha,
        audio_s=1.5,
    )
    report = verify_output(
        path, expect(fmt, spec.carries_alpha, read_video_facts(source, scan=True))
    )
    assert report.ok, report.reasons
    assert report.probe is not None and report.probe.has_audio
    assert report.probe.declared_duration_s == pytest.approx(0.4, abs=0.05)


def test_every_reason_is_reported_at_once(source: Path, corpus_dir: Path) -> None:
    src = read_video_facts(source, scan=True)
    path = write_output(
        source,
        corpus_dir / "many.mkv",
        OutputFormat.mkv_vp9,
        transparent=True,
        keep_alpha=False,
        size=(32, 24),
        drop_frame=2,
    )
    report = verify_output(path, expect(OutputFormat.webm_vp9, True, src))
    assert {"wrong_container", "alpha_missing", "wrong_size", "frame_count"} <= set(report.codes)


def test_size_rule_is_a_parameter_for_endpoints_that_resize(source: Path, corpus_dir: Path) -> None:
    src = read_video_facts(source, scan=True)
    path = write_output(
        source, corpus_dir / "half.webm", OutputFormat.webm_vp9, transparent=True, size=(32, 24)
    )
    assert verify_output(path, expect("webm_vp9", True, src, size="aspect")).ok
    assert verify_output(path, expect("webm_vp9", True, src, size=(32, 24))).ok
    assert verify_output(path, expect("webm_vp9", True, src, size="any")).ok
    assert "wrong_size" in verify_output(path, expect("webm_vp9", True, src)).codes
    squashed = write_output(
        source,
        corpus_dir / "squash.webm",
        OutputFormat.webm_vp9,
        transparent=True,
        size=(64, 24),
    )
    assert (
        "wrong_size" in verify_output(squashed, expect("webm_vp9", True, src, size="aspect")).codes
    )


def test_matte_thresholds_are_settings(
    good: dict[str, tuple[Path, OutputFormat, bool]], src_probe: VideoFacts
) -> None:
    path, fmt, _ = good["webm_vp9"]
    strict = VerifySettings(min_fg_fraction=0.5, max_flicker=0.001)
    report = verify_output(path, expect(fmt, True, src_probe), strict)
    assert set(report.codes) == {"matte_empty", "matte_flicker"}
    sampled = verify_output(
        path, expect(fmt, True, src_probe), VerifySettings(matte_sample_every=4)
    )
    assert sampled.ok and sampled.probe is not None and sampled.probe.flicker is not None


def _write_vfr(path: Path, deltas: list[int]) -> Path:
    """An H.264 MP4 whose frames last ``deltas`` milliseconds each."""
    with av.open(str(path), "w") as out:
        stream: Any = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"preset": "ultrafast", "bf": "0"}
        pts = 0
        for i, delta in enumerate(deltas):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), "rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            out.mux(stream.encode(frame))
            pts += delta
        out.mux(stream.encode(None))
    return path


def test_variable_frame_rate_input_gets_the_documented_tolerance(tmp_path: Path) -> None:
    vfr = read_video_facts(
        _write_vfr(tmp_path / "vfr.mp4", [40, 40, 80, 40, 20, 40] * 4), scan=True
    )
    cfr = read_video_facts(_write_vfr(tmp_path / "cfr.mp4", [40] * 24), scan=True)
    assert vfr.variable_frame_rate and not cfr.variable_frame_rate
    assert vfr.frames == cfr.frames == 24
    spec = spec_for("mp4_h264")
    one_less = VideoFacts(**{**vars(vfr), "frames": 23})
    # An endpoint that resampled the VFR input dropped one frame of 24: within 5%.
    assert not list(_frame_reasons(Expectation.from_input(spec, False, one_less), vfr))
    strict = Expectation.from_input(spec, False, VideoFacts(**{**vars(cfr), "frames": 23}))
    assert "frame_count" in _frame_reasons(strict, cfr)


def _frame_reasons(expected: Expectation, found: VideoFacts) -> list[str]:
    from tasks.media.verify import VideoProbe, _geometry

    probe = VideoProbe(
        container="mp4",
        codec="h264",
        pix_fmt="yuv420p",
        width=found.width,
        height=found.height,
        fps=found.fps,
        frames=found.frames,
        duration_s=found.duration_s,
        has_alpha=False,
        has_audio=False,
    )
    return [code for code, _ in _geometry(expected, probe, VerifySettings())]


def test_mask_video_agrees_with_the_main_alpha(
    source: Path, corpus_dir: Path, good: dict[str, tuple[Path, OutputFormat, bool]]
) -> None:
    main, _, _ = good["webm_vp9"]
    assert verify_mask(main, write_mask(source, corpus_dir / "mask.mp4")) == []
    # The opaque MP4's matte is read from its distance to the green background.
    opaque, _, _ = good["mp4_h264"]
    assert verify_mask(opaque, corpus_dir / "mask.mp4", background_rgb=GREEN) == []
    wrong = write_mask(source, corpus_dir / "mask_full.mp4", matte=full_matte)
    codes = [c for c, _ in verify_mask(main, wrong)]
    assert codes == ["mask_mismatch"]
    short = corpus_dir / "mask_short.mp4"
    truncate(write_mask(source, corpus_dir / "mask_copy.mp4"), short, keep=0.5)
    codes = [c for c, _ in verify_mask(main, short)]
    assert codes and set(codes) <= {"mask_frame_count", "mask_undecodable"}


def test_retry_decision_is_pure_and_off_by_default() -> None:
    off = VerifySettings()
    on = VerifySettings(retry_failed_verification=True)
    assert not should_retry_verification(["output_truncated"], 0, off)
    assert should_retry_verification(["output_truncated"], 0, on)
    assert not should_retry_verification(["output_truncated"], 1, on)  # once only
    assert not should_retry_verification(["wrong_codec", "matte_empty"], 0, on)
    assert should_retry_verification(["wrong_codec", "frame_count"], 0, on)
    custom = VerifySettings(retry_failed_verification=True, retry_codes=frozenset({"matte_empty"}))
    assert should_retry_verification(["matte_empty"], 0, custom)
    assert {str(c) for c in TRANSIENT_CODES} <= {c.value for c in ErrorCode}


def test_settings_describe_every_field() -> None:
    for name, info in VerifySettings.model_fields.items():
        assert info.description, name


def test_sampled_mode_counts_from_packets_and_decodes_a_few_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.media import probe as probe_module
    from tasks.media.samples import make_person_clip

    clip = make_person_clip(tmp_path / "long.mp4", width=64, height=48, seconds=4, fps=20)
    src = read_video_facts(clip, scan=True)
    out = write_output(
        clip,
        tmp_path / "long.webm",
        OutputFormat.webm_vp9,
        transparent=True,
        matte=lambda i, w, h: ellipse_matte(i % 8, w, h),  # a subject that stays in the frame
    )
    decoded: list[int] = []
    add = probe_module.DecodeTally.add

    def counting(self: Any, frame: Any, *args: Any) -> None:
        decoded.append(frame.pts)
        add(self, frame, *args)

    monkeypatch.setattr(probe_module.DecodeTally, "add", counting)
    sampled = verify_output(out, expect("webm_vp9", True, src), VerifySettings(sample_frames=3))
    assert sampled.ok, sampled.reasons
    assert sampled.probe is not None and sampled.probe.frames == src.frames == 80
    assert sampled.probe.duration_s == pytest.approx(4.0, abs=0.06)
    assert sampled.probe.has_alpha and sampled.probe.flicker is not None
    assert 2 <= len(decoded) <= 6  # a keyframe and the frame after it, at 3 points at most
    decoded.clear()
    full = verify_output(out, expect("webm_vp9", True, src), VerifySettings(mode="full"))
    assert full.ok and len(decoded) == 80
    assert sampled.probe.fg_fraction == pytest.approx(full.probe.fg_fraction, abs=0.02)  # type: ignore[union-attr]


def test_a_cut_webm_is_found_by_its_segment_size(source: Path, corpus_dir: Path) -> None:
    from tasks.media.probe import truncation

    whole = write_output(source, corpus_dir / "seg.webm", OutputFormat.webm_vp9, transparent=True)
    assert truncation(whole, "webm") is None
    cut = truncate(whole, corpus_dir / "seg_cut.webm", keep=0.9)
    reason = truncation(cut, "webm")
    assert reason is not None and "Segment" in reason


def test_a_digest_taken_while_downloading_is_not_computed_again(
    good: dict[str, tuple[Path, OutputFormat, bool]], src_probe: VideoFacts
) -> None:
    path, fmt, transparent = good["webm_vp9"]
    given = "ab" * 32
    report = verify_output(path, expect(fmt, transparent, src_probe), sha256=given)
    assert report.ok and report.sha256 == given
