"""Build the segmenter that a job's options ask for."""

from __future__ import annotations

from tasks.endpoints.local import LocalModel, LocalOptions, OnnxKind
from tasks.engine.segment import Segmenter, SelfieSegmenter


def build_segmenter(options: LocalOptions) -> Segmenter:
    """The MediaPipe selfie model, U²-Net-p, or the user's ONNX weights; missing extras say which."""
    if options.model is LocalModel.general:
        from tasks.engine.general import GeneralSegmenter, general_session

        return GeneralSegmenter(general_session())
    if options.model is LocalModel.onnx:
        from tasks.engine.onnx_engine import (
            OnnxImageSegmenter,
            OnnxRecurrentSegmenter,
            open_session,
        )

        assert options.onnx_model_url is not None  # the options' validator guarantees it
        session = open_session(options.onnx_model_url)
        if options.onnx_kind is OnnxKind.recurrent:
            return OnnxRecurrentSegmenter(session, downsample_ratio=options.onnx_downsample_ratio)
        return OnnxImageSegmenter(session, side=options.onnx_input_side)
    return SelfieSegmenter(landscape=options.model is LocalModel.selfie_landscape)
