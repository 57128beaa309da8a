"""Static (QDQ) quantization of U²-Net-p, the general model: speed and matte against float32.

Issue 14 asked whether static quantization pays on this CPU (AVX512-VNNI). This script
quantizes the model as the engine runs it (input made dynamic, here 192x160 as for a 640x480
clip), calibrating on real frames (box, cup, tree, Megamind; `make footage`), and compares each
variant with float32 on other frames of box.mp4 and cup.mp4, through the engine's own
segmenter (its input tensor and matte normalisation): CPU ms a call on one thread
(median of 3 passes) and how well its matte agrees with float32's (mean absolute difference of
the min-max normalised mattes, IoU of their >= 0.5 masks).

    PYTHONPATH=$PWD .venv/bin/python -m bench.quantize_general
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from bench.engine_bench import footage_dir
from tasks.engine.general import (
    GeneralSegmenter,
    dynamic_input,
    model_tensor,
    session_options,
    u2netp_bytes,
)

W, H = 192, 160  # model_size(640, 480, GENERAL_SIDE)


def frames(name: str, every: int, count: int, skip: int = 0) -> Iterator[npt.NDArray[np.uint8]]:
    """Frames of a footage clip, RGB at the model's size, as the engine hands them over."""
    with av.open(str(footage_dir() / name)) as c:
        picked = itertools.islice(c.decode(video=0), skip, None, every)
        for f in itertools.islice(picked, count):
            yield f.to_ndarray(width=W, height=H, format="rgb24")


def measure(path: Path, held_out: list[npt.NDArray[np.uint8]]) -> tuple[list[Any], float]:
    """The engine's segmenter on ``path``: its mattes, and median CPU ms a call on one thread."""
    import onnxruntime as ort

    seg = GeneralSegmenter(
        ort.InferenceSession(
            str(path), sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
    )
    mattes = [seg(rgb) for rgb in held_out]
    times = []
    for _ in range(3):
        for rgb in held_out:
            t0 = time.thread_time()
            seg(rgb)
            times.append(time.thread_time() - t0)
    return mattes, 1e3 * float(np.median(times))


def quantized(work: Path, calibration: list[npt.NDArray[np.uint8]]) -> dict[str, Path]:
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # The shipped graph is opset 11; per-channel DequantizeLinear needs 13.
    graph = version_converter.convert_version(
        onnx.load_from_string(dynamic_input(u2netp_bytes())), 13
    )
    onnx.save(graph, str(work / "float.onnx"))
    quant_pre_process(str(work / "float.onnx"), str(work / "pre.onnx"), skip_symbolic_shape=True)
    nodes = onnx.load(str(work / "pre.onnx")).graph.node
    output_side = [n.name for n in nodes if n.op_type in ("Sigmoid", "Concat")][-12:]
    output_side += [n.name for n in nodes if n.op_type == "Conv"][-8:]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(calibration)

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            rgb = next(self.left, None)
            return None if rgb is None else {"input.1": model_tensor(rgb)}

    u8, s8, u16 = QuantType.QUInt8, QuantType.QInt8, QuantType.QUInt16
    variants: dict[str, dict[str, Any]] = {
        "int8 act u8, per-channel, min-max": {"activation_type": u8},
        "int8 act s8, per-channel, min-max": {"activation_type": s8},
        "int8 act u8, per-channel, percentile, output side float": {
            "activation_type": u8,
            "calibrate_method": CalibrationMethod.Percentile,
            "nodes_to_exclude": output_side,
        },
        "act u16, per-channel, min-max": {"activation_type": u16},
    }
    paths = {}
    for i, (label, kw) in enumerate(variants.items()):
        paths[label] = work / f"q{i}.onnx"
        quantize_static(
            str(work / "pre.onnx"),
            str(paths[label]),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            **{"calibrate_method": CalibrationMethod.MinMax, **kw},
        )
    return {"float32": work / "float.onnx", **paths}


def main() -> int:
    calibration = [
        f
        for clip in ("box.mp4", "cup.mp4", "tree.avi", "Megamind.avi")
        for f in frames(clip, 15, 8)
    ]
    held_out = [f for clip in ("box.mp4", "cup.mp4") for f in frames(clip, 20, 10, 7)]
    with tempfile.TemporaryDirectory() as tmp:
        models = quantized(Path(tmp), calibration)
        reference, float_ms = measure(models.pop("float32"), held_out)
        print(f"\nU²-Net-p at {W}x{H}, one thread, {len(held_out)} held-out frames of box and cup")
        print("| variant | CPU ms a call | speed vs float32 | matte MAD vs float32 | IoU@0.5 |")
        print("|---|---|---|---|---|")
        print(f"| float32 | {float_ms:.1f} | 1.00x | 0 | 1 |")
        for label, path in models.items():
            mattes, ms = measure(path, held_out)
            mad = np.mean([np.abs(a - b).mean() for a, b in zip(mattes, reference, strict=True)])
            iou = np.mean(
                [
                    ((a >= 0.5) & (b >= 0.5)).sum() / max(((a >= 0.5) | (b >= 0.5)).sum(), 1)
                    for a, b in zip(mattes, reference, strict=True)
                ]
            )
            print(f"| {label} | {ms:.1f} | {float_ms / ms:.2f}x | {mad:.3f} | {iou:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
