"""The local engine as an endpoint: pixelcut's options plus the engine's own knobs.

The model is MediaPipe's selfie segmenter by default (people); ``model=general`` is U²-Net-p, a
salient-object model for products and scenes (``make models`` fetches it); ``model=onnx`` runs
user-supplied weights (BiRefNet-like image models or RobustVideoMatting-like recurrent ones)
through onnxruntime.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from tasks.endpoints.options import RemovalOptions


class LocalModel(StrEnum):
    selfie = "selfie"
    selfie_landscape = "selfie_landscape"
    general = "general"
    onnx = "onnx"


class OnnxKind(StrEnum):
    image = "image"
    recurrent = "recurrent"


class TemporalFilter(StrEnum):
    flow = "flow"
    ema = "ema"


class LocalOptions(RemovalOptions):
    smoothing: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="Weight of the newest matte in the temporal average (1.0: no smoothing; "
        "0.2 suits flow, about 0.6 suits ema, which lags on moving edges).",
    )
    temporal: TemporalFilter = Field(
        TemporalFilter.flow,
        description="flow: motion-compensated averaging (no lag on moving edges); ema: plain.",
    )
    refine_edges: bool = Field(
        True, description="Refine the model's coarse matte at full resolution (guided filter)."
    )
    model: LocalModel = Field(
        LocalModel.selfie,
        description="selfie / selfie_landscape (MediaPipe, built in: people), general "
        "(U²-Net-p: products, any salient object; `make models`) or onnx (your weights).",
    )
    onnx_model_url: str | None = Field(
        None, description="Path or fsspec URL of the ONNX weights, only with model=onnx."
    )
    onnx_kind: OnnxKind = Field(
        OnnxKind.image,
        description="image: per-frame model like BiRefNet; recurrent: RobustVideoMatting-like.",
    )
    onnx_input_side: int | None = Field(
        None,
        ge=16,
        le=4096,
        description="Image models with dynamic input size: side of the square input (1024).",
    )
    onnx_downsample_ratio: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Recurrent models: downsample_ratio (default: coarse pass about 512 px).",
    )

    @model_validator(mode="after")
    def _model_consistent(self) -> LocalOptions:
        if self.model is LocalModel.onnx and not self.onnx_model_url:
            raise ValueError("model=onnx needs onnx_model_url (a path or fsspec URL)")
        if self.model is not LocalModel.onnx and self.onnx_model_url:
            raise ValueError("onnx_model_url is only used with model=onnx")
        return self
