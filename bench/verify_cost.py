"""Cost of verifying an output, as a ratio to a plain decode of the same file (same run).

Usage: ``.venv/bin/python -m bench.verify_cost 1920 1080 5`` (width, height, seconds).
``sampled`` is the default mode (packets for counts and timing, a few decoded frames for alpha and
matte), given the sha256 the download computed, as the fal runner does; ``sampled+hash`` also
hashes the file; ``full`` decodes every frame. Absolute times on a shared machine are noise; the
ratios are what to compare.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import av

from tasks.media.facts import read_video_facts
from tasks.media.formats import spec_for
from tasks.media.samples import make_person_clip
from tasks.media.verify import Expectation, VerifySettings, decoder_for, verify_output
from tasks.storage.store import sha256_file
from tests.fakes.outputs import GREEN, write_output

WORK = Path("bench/tmp/verify")
FORMATS = (("webm_vp9", True), ("mp4_h264", False), ("mov_proresks", True))
SAMPLED, FULL = VerifySettings(mode="sampled"), VerifySettings(mode="full")


def decode_only(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = decoder_for(stream)
        return sum(len(decoder.decode(packet)) for packet in container.demux(stream))


def best_of(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(width: int, height: int, seconds: float) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    clip = WORK / f"person_{width}x{height}_{seconds:g}s.mp4"
    if not clip.exists():
        make_person_clip(clip, width=width, height=height, seconds=seconds, audio=False)
    t_probe = best_of(lambda: read_video_facts(clip, scan=True))
    t_decode = best_of(lambda: decode_only(clip))
    print(f"{width}x{height} input: read_video_facts/decode = {t_probe / t_decode:.2f}")
    source = read_video_facts(clip, scan=True)
    for fmt, transparent in FORMATS:
        out = WORK / f"out_{width}x{height}_{seconds:g}s_{fmt}{spec_for(fmt).extension}"
        if not out.exists():
            write_output(clip, out, fmt, transparent=transparent)
        expected = Expectation.from_input(
            spec_for(fmt), transparent, source, background_rgb=None if transparent else GREEN
        )
        sha = sha256_file(out)
        base = best_of(lambda out=out: decode_only(out))
        sampled = best_of(
            lambda out=out, e=expected, h=sha: verify_output(out, e, SAMPLED, sha256=h)
        )
        hashed = best_of(lambda out=out, e=expected: verify_output(out, e, SAMPLED))
        full = best_of(lambda out=out, e=expected: verify_output(out, e, FULL))
        ok = (
            verify_output(out, expected, SAMPLED, sha256=sha).ok
            and verify_output(out, expected, FULL).ok
        )
        print(
            f"{width}x{height} {source.frames} frames {fmt}: verify/decode sampled "
            f"x{sampled / base:.3f}, sampled+hash x{hashed / base:.3f}, full x{full / base:.2f} "
            f"(decode {base:.3f} s, {out.stat().st_size / 1e6:.1f} MB, ok={ok})"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
