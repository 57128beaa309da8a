"""What a correct output of a fal job looks like, as each endpoint documents it.

pixelcut returns the input video with its background replaced: same size, frame rate, frame
count and duration, over the colour asked for. birefnet's output file states its own width,
height and frame rate (``VideoFile`` in its OpenAPI), and it runs the model at an operating
resolution: its output must keep the input's frame count and shape, and match what fal states.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from pydantic import BaseModel

from tasks.endpoints import EndpointInfo, birefnet, pixelcut
from tasks.ledger.handles import FalFile
from tasks.media.facts import VideoFacts
from tasks.media.formats import spec_for
from tasks.media.verify import Expectation

# How each app sizes its output: "same" as the input, or "stated" in the result (else aspect).
SIZE_RULES = {pixelcut.APP: "same", birefnet.APP: "stated"}
_FACT_FIELDS = {f.name for f in fields(VideoFacts)}


def input_facts(probed: dict[str, Any] | None) -> VideoFacts | None:
    """The input's facts as the ledger kept them at submit time (None when it has none)."""
    if not probed:
        return None
    values = {k: v for k, v in probed.items() if k in _FACT_FIELDS}
    if "frames_exact" not in values and "exact" in probed:  # entries before VideoFacts
        values["frames_exact"] = bool(probed["exact"])
    values["notes"] = tuple(values.get("notes") or ())
    try:
        return VideoFacts(**values)
    except TypeError:
        return None


def fal_expectation(
    info: EndpointInfo, options: BaseModel, probed: dict[str, Any] | None, video: FalFile
) -> Expectation:
    """The expectation of a job's main output, from its input facts and the endpoint's rule."""
    spec = spec_for(info.output_format(options))
    transparent = info.transparent(options)
    facts = input_facts(probed)
    if facts is None:  # nothing known of the input: format and alpha only
        return Expectation(spec=spec, transparent=transparent)
    rgb = getattr(options, "rgb", None)
    stated = SIZE_RULES.get(info.fal_app or "") == "stated"
    size: Any = "aspect" if stated else "same"
    if stated and video.width and video.height:
        size = (video.width, video.height)
    expected = Expectation.from_input(spec, transparent, facts, size=size, background_rgb=rgb)
    if not facts.frames_exact:
        expected = replace(expected, frames=None)
    if not stated and spec.encoded_size(facts.width, facts.height) != (facts.width, facts.height):
        expected = replace(expected, size_slack=1)  # H.264/H.265 cannot keep an odd side
    if stated and video.fps:
        expected = replace(expected, fps=float(video.fps))
    return expected
