"""Probe an output by reading what it must and no more: packets for counts, a few frames for pixels.

Frame count and timing come from the container's packets, which are read without decoding them
(one packet per shown frame in the formats endpoints write: VP9 packs hidden frames into
superframes). Alpha presence, pixel format and matte statistics come from a sample of decoded
frames: at up to ``samples`` keyframes spread over the file (first and last included), the
keyframe and the frame after it (the pair gives flicker). Decoding starts at a keyframe, so a
sample costs two frames whatever the group-of-pictures length. GIF is decoded whole: its frames
are drawn over each other, and GIF outputs are small.

What this does not see, by design: a frame in the middle that does not decode (the structure
checks of ``tasks.media.probe.truncation`` and the packet timing still catch files cut short),
and, in a file with few keyframes, the matte between them (a clip encoded with one keyframe is
sampled at its first two frames only). ``VerifySettings.mode="full"`` decodes every frame.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from tasks.media.probe import (
    DecodeTally,
    MatteStats,
    VideoProbe,
    decode_all,
    decoder_for,
    open_video,
    video_probe,
)


@dataclass
class PacketScan:
    """What the video stream's packets say without decoding: count, times, keyframes."""

    pts: list[int] = field(default_factory=list)  # sorted presentation times (stream units)
    keyframes: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def frames(self) -> int:
        return len(self.pts)


def scan_packets(container: Any, stream: Any) -> PacketScan:
    """Demux every packet of ``stream`` (no decoding); an error part-way is kept, not raised."""
    scan = PacketScan()
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            t = packet.pts if packet.pts is not None else packet.dts
            if t is None:
                continue
            scan.pts.append(int(t))
            if packet.is_keyframe:
                scan.keyframes.append(int(t))
            if packet.is_corrupt and scan.error is None:
                scan.error = f"corrupt packet at frame {scan.frames}"
    except av.error.FFmpegError as exc:
        scan.error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
    scan.pts.sort()
    scan.keyframes.sort()
    return scan


def sample_points(keyframes: list[int], samples: int) -> list[int]:
    """Up to ``samples`` keyframes spread evenly, the first and the last included."""
    if len(keyframes) <= samples:
        return list(keyframes)
    if samples == 1:
        return keyframes[:1]
    last = len(keyframes) - 1
    picks = {round(i * last / (samples - 1)) for i in range(samples)}
    return [keyframes[i] for i in sorted(picks)]


def decode_samples(
    container: Any,
    stream: Any,
    scan: PacketScan,
    samples: int,
    background_rgb: tuple[int, int, int] | None,
    tolerance: int,
) -> DecodeTally:
    """Decode a keyframe and the frame after it at each sample point, measuring alpha and matte."""
    tally = DecodeTally(MatteStats(every=1), stream.codec_context.pix_fmt or "")
    decoder = decoder_for(stream)
    try:
        for start in sample_points(scan.keyframes, samples):
            container.seek(start, stream=stream, backward=True, any_frame=False)
            decoder.flush_buffers()  # forget the previous sample (and a drained end of stream)
            for frame in _frames_from(container, stream, decoder, start, 2):
                tally.frames = bisect.bisect_left(scan.pts, frame.pts)  # the frame's index
                tally.add(frame, background_rgb, tolerance)
    except av.error.FFmpegError as exc:
        tally.error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
    tally.error = tally.error or scan.error
    tally.frames = scan.frames
    if scan.pts:
        tb = float(stream.time_base)
        tally.first_time, tally.last_time = scan.pts[0] * tb, scan.pts[-1] * tb
    return tally


def _frames_from(container: Any, stream: Any, decoder: Any, start: int, count: int) -> list[Any]:
    """The first ``count`` frames at or after ``start`` (the decoder begins at a keyframe)."""
    got: list[Any] = []
    for packet in container.demux(stream):  # its last, empty packet drains the decoder
        for frame in decoder.decode(packet):
            if frame.pts is not None and frame.pts >= start:
                got.append(frame)
        if len(got) >= count:
            break
    return got[:count]


def probe_sampled(
    path: Path,
    *,
    samples: int = 6,
    background_rgb: tuple[int, int, int] | None = None,
    background_tolerance: int = 40,
) -> VideoProbe:
    """``tasks.media.probe.probe``'s answer from packets and sampled frames (see the module).

    Raises as ``probe`` does: ``av.error.FFmpegError`` if the file does not open,
    ``NoVideoStream`` if it holds no video stream.
    """
    with open_video(path) as (container, stream, kind):
        if stream.codec_context.name == "gif":
            tally = decode_all(container, stream, 1, background_rgb, background_tolerance)
        else:
            scan = scan_packets(container, stream)
            tally = decode_samples(
                container, stream, scan, samples, background_rgb, background_tolerance
            )
        return video_probe(container, stream, tally, kind)
