"""Local engine benchmark: speed against a naive per-frame loop, matte quality, peak memory.

The machine is usually shared, so absolute frame rates are noisy: every speed is reported next
to a naive single-threaded loop measured in the same run, and the ratio is what to compare.

    python -m bench.engine_bench            # 10 s clips at 720p and 1080p
    python -m bench.engine_bench --quick    # 3 s clips at 720p only, shorter quality clip
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from tasks.endpoints.local import LocalOptions
from tasks.engine.pipeline import ENCODER_OPTIONS, remove_background
from tasks.media.quality import alpha_frames, matte_quality
from tasks.media.samples import make_composite_clip, make_person_clip

ROOT = Path(__file__).resolve().parent
SPEED_HEAD = [
    *("size", "format", "frames", "naive fps", "engine fps", "engine / naive"),
    *("naive CPU ms/frame", "engine CPU ms/frame"),
]
F32 = npt.NDArray[np.float32]

# ----------------------------------------------------------------------------- metrics


def _gauss_kernels(sigma: float = 1.4, epsilon: float = 1e-2) -> tuple[F32, F32]:
    """RobustVideoMatting's Gaussian-derivative filters for the Grad metric."""
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon))))
    r = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(r**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    dg = -r * g / sigma**2
    fx = np.outer(g, dg)
    fx /= np.sqrt((fx**2).sum())
    return fx.astype(np.float32), fx.T.copy().astype(np.float32)


_FX, _FY = _gauss_kernels()


def _gauss_gradient(a: F32) -> F32:
    gx = cv2.filter2D(a, -1, _FX, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(a, -1, _FY, borderType=cv2.BORDER_REPLICATE)
    return np.asarray(np.sqrt(gx**2 + gy**2), dtype=np.float32)


def grad_error(predicted: Path, truth: Path) -> float:
    """Mean per-frame Grad (RVM's definition: sum of squared gradient differences / 1000)."""
    out = []
    for p, t in zip(alpha_frames(predicted), alpha_frames(truth), strict=False):
        pn = cv2.normalize(p, None, 1.0, 0.0, cv2.NORM_MINMAX)
        tn = cv2.normalize(t, None, 1.0, 0.0, cv2.NORM_MINMAX)
        out.append(float(((_gauss_gradient(pn) - _gauss_gradient(tn)) ** 2).sum()) / 1000.0)
    return round(float(np.mean(out)), 3)


def mean_alpha_change(path: Path) -> float:
    """Mean |alpha_t - alpha_(t-1)| over frames, x1e3: flicker on a clip with little motion."""
    prev: F32 | None = None
    diffs = []
    for a in alpha_frames(path):
        if prev is not None:
            diffs.append(float(np.abs(a - prev).mean()))
        prev = a
    return round(1e3 * float(np.mean(diffs)), 3) if diffs else 0.0


# ----------------------------------------------------------------------------- runs


def naive_frame(rgb: Any, a: F32, background: tuple[int, int, int] | None) -> av.VideoFrame:
    """One frame of the naive loops: RGBA with the matte as alpha, or composited on a colour."""
    if background is None:
        img = np.dstack((rgb, (a * 255.0 + 0.5).astype(np.uint8)))
        return av.VideoFrame.from_ndarray(img, format="rgba")
    bg = np.array(background, dtype=np.float32)
    comp = rgb * a[..., None] + bg * (1.0 - a[..., None])
    return av.VideoFrame.from_ndarray((comp + 0.5).astype(np.uint8), format="rgb24")


def naive_loop(src: Path, dst: Path, *, transparent: bool) -> int:
    """The baseline: decode, segment the full frame, composite, encode, one frame at a time."""
    matte, close = naive_segment("selfie")
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        codec = "libvpx-vp9" if transparent else "libx264"
        vout = out.add_stream(codec, rate=vin.average_rate)
        vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
        vout.pix_fmt = "yuva420p" if transparent else "yuv420p"
        vout.options = dict(ENCODER_OPTIONS[codec])
        frames = naive_encode(inp, vin, out, vout, matte, None if transparent else (0, 255, 0))
    close()
    return frames


def naive_encode(
    inp: Any,
    vin: Any,
    out: Any,
    vout: Any,
    matte: Callable[[npt.NDArray[np.uint8]], F32],
    background: tuple[int, int, int] | None,
) -> int:
    """Decode, segment the full frame, composite, encode: one frame at a time."""
    frames = 0
    for frame in inp.decode(vin):
        rgb = frame.to_ndarray(format="rgb24")
        new = naive_frame(rgb, matte(rgb), background)
        new.pts = frames
        out.mux(vout.encode(new))
        frames += 1
    out.mux(vout.encode(None))
    return frames


def options(**kw: Any) -> LocalOptions:
    """LocalOptions with only the fields this checkout knows (so the bench runs on old code too)."""
    fields = LocalOptions.model_fields
    return LocalOptions(**{k: v for k, v in kw.items() if k in fields})


def engine_run(src: Path, dst: Path, opts: LocalOptions) -> int:
    result = remove_background(src, dst, opts, smoothing=opts.smoothing)
    return result.frames


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """Frames, wall seconds and CPU seconds (all threads of this process) of one run."""
    t0, c0 = time.perf_counter(), time.process_time()
    frames = fn()
    return frames, time.perf_counter() - t0, time.process_time() - c0


_RSS_CHILD = """
import resource, sys, threading, time
from pathlib import Path
from bench.engine_bench import engine_run, options
page = __import__("os").sysconf("SC_PAGE_SIZE")
def rss():
    return int(Path("/proc/self/statm").read_text().split()[1]) * page
engine_run(Path(sys.argv[1]), Path(sys.argv[3]), options())  # warm: imports, model, codecs
base, peak, done = rss(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.02)
t = threading.Thread(target=sample)
t.start()
engine_run(Path(sys.argv[2]), Path(sys.argv[3]), options())
done.set()
t.join()
print(base, peak[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss_mb(warm: Path, src: Path, dst: Path) -> tuple[float, float, float]:
    """RSS after a warm-up run, peak RSS sampled during a run on ``src``, and ru_maxrss (MiB).

    A fresh interpreter, so nothing else of the bench is in it; ru_maxrss alone is no use
    here, as loading MediaPipe peaks above anything a run adds.
    """
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(warm), str(src), str(dst)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT.parent,
    )
    base, peak, maxrss = (int(v) / 2**20 for v in out.stdout.strip().splitlines()[-1].split())
    return round(base, 1), round(peak, 1), round(maxrss, 1)


# ----------------------------------------------------------------------------- real corpus

CORPUS_HEAD = [
    *("clip", "size", "model", "format", "frames", "naive fps", "engine fps", "engine / naive"),
    *("job fps", "engine CPU ms/f", "decode ms/f", "matte ms/f", "encode ms/f"),
    *("flicker x1e3", "fg fraction", "result"),
]
CORPUS_FORMATS = {
    "webm_vp9": {},
    "mp4_h264": {"background": "custom", "background_color": "20,200,60"},
    "mov_proresks": {},
}
# Which model each clip is for: people clips get the selfie model, products the general one;
# products and the tree also run with selfie, which is what the README's advice rests on.
CORPUS_RUNS = [
    ("Megamind_720p.mp4", "selfie"),
    ("Megamind.avi", "selfie"),
    ("Megamind_bugy.avi", "selfie"),
    ("vtest.avi", "selfie"),
    ("box.mp4", "general"),
    ("box.mp4", "selfie"),
    ("cup.mp4", "general"),
    ("cup.mp4", "selfie"),
    ("tree.avi", "general"),
    ("tree.avi", "selfie"),
]


def footage_dir() -> Path:
    default = Path.home() / ".cache" / "matteflow" / "footage" / "clips"
    return Path(os.environ.get("MATTEFLOW_FOOTAGE", default))


def megamind_720p(footage: Path, work: Path) -> Path:
    """Megamind.avi scaled to 1280x720 (x264 crf 18): the issue's real 720p clip."""
    return scaled_clip(footage / "Megamind.avi", work / "Megamind_720p.mp4", 1280, 720)


def small_clip(footage: Path, work: Path, frames: int) -> Path:
    """The first ``frames`` frames of Megamind.avi at 176x144: a short, small real clip."""
    dst = work / f"Megamind_176x144_{frames}.mp4"
    return scaled_clip(footage / "Megamind.avi", dst, 176, 144, frames)


def scaled_clip(src: Path, dst: Path, width: int, height: int, frames: int | None = None) -> Path:
    """``src`` scaled to ``width``x``height`` (x264 crf 18), its first ``frames`` frames."""
    if dst.exists():
        return dst
    with av.open(str(src)) as c, av.open(str(dst), "w") as out:
        vin = c.streams.video[0]
        s = out.add_stream("libx264", rate=vin.average_rate)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "18", "preset": "veryfast"}
        for i, f in enumerate(itertools.islice(c.decode(vin), frames)):
            g = f.reformat(width=width, height=height, format="yuv420p")
            g.pts = i
            out.mux(s.encode(g))
        out.mux(s.encode(None))
    return dst


def fixed_cost(work: Path, models: list[str]) -> list[list[Any]]:
    """What a job costs before its first frame, with the model warm in the process.

    A job (engine, input facts, verification, as in the corpus table) on 24 and on 120 frames of
    a 176x144 real clip, best of three each; the time extrapolated to zero frames is the fixed
    cost, the rest is per frame.
    """
    footage = footage_dir()
    clips = {n: small_clip(footage, work, n) for n in (24, 120)}
    rows = []
    for model in models:
        best: dict[int, float] = {}
        for _ in range(3):
            for n, src in clips.items():
                dst = work / f"fixed-{model}-{n}.webm"
                t0 = time.perf_counter()
                corpus_job(src, dst, options(output_format="webm_vp9", model=model))
                best[n] = min(best.get(n, math.inf), time.perf_counter() - t0)
        per_frame = (best[120] - best[24]) / (120 - 24)
        fixed = best[24] - 24 * per_frame
        rows.append(
            [model, f"{best[24]:.3f}", f"{best[120]:.3f}", f"{1e3 * per_frame:.1f}", f"{fixed:.3f}"]
        )
        print("fixed cost", rows[-1], flush=True)
    return rows


def corpus_job(src: Path, dst: Path, opts: LocalOptions) -> Any:
    """The engine, then the job's input facts and the output's verification."""
    remove_background(src, dst, opts)
    return job_check(src, dst, opts)


def job_check(src: Path, dst: Path, opts: LocalOptions) -> Any:
    """What a job adds to the engine: the input's facts and the output's verification."""
    from tasks.media.facts import read_video_facts
    from tasks.media.formats import spec_for
    from tasks.media.verify import Expectation, verify_output

    spec = spec_for(opts.resolved_format)
    source = read_video_facts(src, scan=True)
    return verify_output(
        dst, Expectation.from_input(spec, opts.transparent, source, background_rgb=opts.rgb)
    )


def naive_segment(model: str) -> tuple[Callable[[npt.NDArray[np.uint8]], F32], Callable[[], None]]:
    """The model on one full frame at a time, as a naive script would call it."""
    if model == "general":
        from tasks.engine.general import GeneralSegmenter, general_session

        seg = GeneralSegmenter(general_session())

        def general_matte(rgb: npt.NDArray[np.uint8]) -> F32:
            h, w = rgb.shape[:2]
            small = cv2.resize(rgb, seg.input_size(w, h), interpolation=cv2.INTER_LINEAR)
            return np.asarray(cv2.resize(seg(small), (w, h)), np.float32)

        return general_matte, seg.close
    from mediapipe.python.solutions import selfie_segmentation

    mp = selfie_segmentation.SelfieSegmentation(model_selection=0)

    def selfie_matte(rgb: npt.NDArray[np.uint8]) -> F32:
        return np.clip(np.asarray(mp.process(rgb).segmentation_mask, np.float32), 0.0, 1.0)

    return selfie_matte, mp.close


def naive_format_loop(src: Path, dst: Path, fmt: str, model: str) -> int:
    """Decode, segment the full frame, composite, encode: one frame at a time, one thread."""
    from tasks.media.formats import spec_for

    opts = options(output_format=fmt, **CORPUS_FORMATS[fmt])
    spec = spec_for(opts.resolved_format)
    matte, close = naive_segment(model)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=spec.container) as out:
        vin = inp.streams.video[0]
        vout = out.add_stream(spec.codec, rate=vin.average_rate or 25)
        vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
        alpha = opts.transparent and spec.alpha_pix_fmt
        vout.pix_fmt = spec.alpha_pix_fmt if alpha else spec.opaque_pix_fmt
        vout.options = dict(ENCODER_OPTIONS.get(spec.codec, {}))
        background = None if alpha else (opts.rgb or (0, 0, 0))
        frames = naive_encode(inp, vin, out, vout, matte, background)
    close()
    return frames


def corpus_row(src: Path, model: str, fmt: str, work: Path, naive: bool) -> list[Any]:
    """One clip in one format: naive loop, then the engine and the job's verification."""
    from tasks.media.formats import spec_for

    opts = options(output_format=fmt, model=model, **CORPUS_FORMATS[fmt])
    spec = spec_for(opts.resolved_format)
    name = f"{src.stem}-{model}-{fmt}"
    naive_fps = "-"
    if naive:
        n, t, _ = timed(
            functools.partial(
                naive_format_loop, src, work / f"naive-{name}{spec.extension}", fmt, model
            )
        )
        naive_fps = f"{n / t:.1f}"
    dst = work / f"engine-{name}{spec.extension}"
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        result = remove_background(src, dst, opts)
    except Exception as exc:  # the table shows what a user would have seen
        code = getattr(exc, "code", type(exc).__name__)
        return [
            src.name,
            "",
            model,
            fmt,
            0,
            naive_fps,
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            f"{code}: {str(exc)[:60]}",
        ]
    engine_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    report = job_check(src, dst, opts)
    job_s = time.perf_counter() - t0
    f = result.frames
    p = report.probe
    stage = {k: f"{1e3 * v / f:.1f}" for k, v in result.stage_s.items()}
    ratio = f"{f / engine_s / float(naive_fps):.2f}x" if naive else "-"
    return [
        src.name,
        f"{result.width}x{result.height}",
        model,
        fmt,
        f,
        naive_fps,
        f"{f / engine_s:.1f}",
        ratio,
        f"{f / job_s:.1f}",
        f"{1e3 * cpu_s / f:.1f}",
        stage.get("decode", "-"),
        stage.get("matte", "-"),
        stage.get("encode", "-"),
        f"{1e3 * p.flicker:.2f}" if p and p.flicker is not None else "-",
        f"{p.fg_fraction:.3f}" if p and p.fg_fraction is not None else "-",
        "ok" if report.ok else ",".join(report.codes),
    ]


def corpus(work: Path, formats: list[str], naive: bool, clips: str = "") -> list[list[Any]]:
    footage = footage_dir()
    if not (footage / ".verified").exists():
        print(f"no footage in {footage}: run `make footage`", flush=True)
        return []
    megamind_720p(footage, work)
    rows = []
    wanted = set(filter(None, clips.split(",")))
    for clip, model in CORPUS_RUNS:
        if wanted and clip not in wanted:
            continue
        if model not in {m.value for m in type(LocalOptions().model)}:
            continue  # this checkout does not have the model
        src = work / clip if clip == "Megamind_720p.mp4" else footage / clip
        for fmt in formats:
            if (
                model == "selfie"
                and clip in ("box.mp4", "cup.mp4", "tree.avi")
                and fmt != "webm_vp9"
            ):
                continue  # the comparison of models needs one format only
            row = corpus_row(src, model, fmt, work, naive)
            rows.append(row)
            print("corpus", row, flush=True)
    return rows


# ----------------------------------------------------------------------------- report


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"nproc {os.cpu_count()}, {model}, load average at start {load:.2f}"


def table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="3 s clips at 720p only")
    ap.add_argument("--seconds", type=float, default=None, help="clip length for speed runs")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS runs")
    ap.add_argument("--repeat", type=int, default=None, help="speed runs per case (best kept)")
    ap.add_argument("--label", default="", help="added to the report's file name")
    ap.add_argument("--corpus-only", action="store_true", help="only the real-footage table")
    ap.add_argument("--no-corpus", action="store_true", help="skip the real-footage table")
    ap.add_argument("--no-naive", action="store_true", help="corpus: skip the naive loop")
    ap.add_argument(
        "--formats",
        default=",".join(CORPUS_FORMATS),
        help="corpus: comma-separated output formats (default: all three)",
    )
    ap.add_argument("--clips", default="", help="corpus: comma-separated clip names (default all)")
    args = ap.parse_args(argv)
    if args.quick and not args.label:
        args.label = "quick"  # never overwrite the day's full results with a short run
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.repeat = args.repeat or (1 if args.quick else 2)
    sizes = [(1280, 720)] if args.quick else [(1280, 720), (1920, 1080)]
    work = ROOT / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    header = f"machine: {machine()}; date {started:%Y-%m-%d %H:%M} UTC"
    print(header, flush=True)
    if args.corpus_only:
        lines, data = real_footage(work, args)
        return write_report(args, started, [header, *lines], data)

    speed_rows: list[list[Any]] = []
    flicker: dict[str, float] = {}
    formats = [("webm_vp9", "transparent"), ("mp4_h264", "green")]
    for w, h in sizes:
        src = make_person_clip(
            work / f"person_{h}p.mp4", width=w, height=h, seconds=seconds, audio=False
        )
        for fmt, bg in formats:
            ext = ".webm" if fmt == "webm_vp9" else ".mp4"
            naive_dst = work / f"naive_{h}p{ext}"
            eng_dst = work / f"engine_{h}p{ext}"
            opts = options(background=bg, output_format=fmt)
            naive_runs, eng_runs = [], []
            naive = functools.partial(naive_loop, src, naive_dst, transparent=bg == "transparent")
            engine = functools.partial(engine_run, src, eng_dst, opts)
            for _ in range(args.repeat):  # alternate, so both see the same background load
                naive_runs.append(timed(naive))
                eng_runs.append(timed(engine))
            n1, t1, c1 = min(naive_runs, key=lambda r: r[1])  # best of the repeats
            n2, t2, c2 = min(eng_runs, key=lambda r: r[1])
            naive_fps, eng_fps = n1 / t1, n2 / t2
            row = [
                f"{w}x{h}",
                fmt,
                n2,
                f"{naive_fps:.1f}",
                f"{eng_fps:.1f}",
                f"{eng_fps / naive_fps:.2f}x",
                f"{1e3 * c1 / n1:.1f}",
                f"{1e3 * c2 / n2:.1f}",
            ]
            speed_rows.append(row)
            print("speed", row, flush=True)
            if fmt == "webm_vp9" and h == sizes[0][1]:
                pf_dst = work / f"perframe_{h}p.webm"
                engine_run(src, pf_dst, options(smoothing=1.0, refine_edges=False))
                flicker = {
                    "naive loop": mean_alpha_change(naive_dst),
                    "engine per-frame (no smoothing, no refinement)": mean_alpha_change(pf_dst),
                    "engine default": mean_alpha_change(eng_dst),
                }
                print("flicker", flicker, flush=True)

    qw, qh = 1280, 720
    qsec = 2.0 if args.quick else 4.0
    comp = work / f"composite_{qh}p.mp4"
    truth = work / f"composite_{qh}p_alpha.mkv"
    make_composite_clip(comp, truth, width=qw, height=qh, seconds=qsec)
    variants: dict[str, dict[str, Any]] = {
        "per-frame (smoothing 1.0, no refinement)": dict(smoothing=1.0, refine_edges=False),
        "EMA 0.6, no refinement": dict(smoothing=0.6, temporal="ema", refine_edges=False),
        "flow-guided, no refinement": dict(temporal="flow", refine_edges=False),
        "per-frame + refinement": dict(smoothing=1.0, refine_edges=True),
        "engine default (flow + refinement)": {},
    }
    quality_rows: list[list[Any]] = []
    seen: set[str] = set()
    for name, kw in variants.items():
        opts = options(**kw)
        key = opts.model_dump_json()
        if key in seen:  # old code without these options: skip duplicates
            continue
        seen.add(key)
        dst = work / f"quality_{len(seen)}.webm"
        engine_run(comp, dst, opts)
        q = matte_quality(dst, truth)
        quality_rows.append([name, q["MAD"], q["MSE"], q["dtSSD"], grad_error(dst, truth)])
        print("quality", quality_rows[-1], flush=True)

    mem_rows: list[list[Any]] = []
    if not args.no_memory:
        warm = make_person_clip(work / "mem_warm.mp4", width=1280, height=720, seconds=1.0)
        for sec in (5.0, 20.0):
            src = make_person_clip(
                work / f"mem_{int(sec)}s.mp4", width=1280, height=720, seconds=sec, audio=True
            )
            base, peak, maxrss = peak_rss_mb(warm, src, work / f"mem_{int(sec)}s.webm")
            mem_rows.append([f"{sec:.0f} s 1280x720", base, peak, f"{peak - base:+.1f}", maxrss])
            print("memory", mem_rows[-1], flush=True)

    report = [
        f"# Local engine benchmark {args.label}".rstrip(),
        "",
        header + ". The machine is shared with other work: compare ratios, not absolute fps.",
        f"Speed: {seconds:g} s person clips (25 fps, no audio), end to end (decode to encoded file), "
        f"best of {args.repeat} alternating runs; "
        "naive = single-threaded loop (decode, MediaPipe on the full frame, encode), VP9 realtime. "
        "CPU ms/frame counts every thread of the process: it is less sensitive to other load.",
        "",
        table(SPEED_HEAD, speed_rows),
        "",
        f"Quality: {qsec:g} s {qw}x{qh} composite with known alpha (MAD, MSE x1e3; dtSSD x1e2; "
        "Grad /1e3 per frame; lower is better), read back from the webm_vp9 output.",
        "",
        table(["variant", "MAD", "MSE", "dtSSD", "Grad"], quality_rows),
        "",
        f"Flicker: mean |alpha_t - alpha_t-1| x1e3 on the {sizes[0][0]}x{sizes[0][1]} person clip "
        "(slow pan; lower = steadier).",
        "",
        table(["run", "mean alpha change"], [[k, v] for k, v in flicker.items()]),
    ]
    if mem_rows:
        report += [
            "",
            "Memory of one engine run in a fresh process (with audio), MiB: RSS after a 1 s "
            "warm-up run, peak RSS sampled every 20 ms during the run, and ru_maxrss.",
            "",
        ]
        report.append(table(["clip", "RSS warm", "peak in run", "growth", "ru_maxrss"], mem_rows))
    data = {"speed": speed_rows, "quality": quality_rows, "flicker": flicker, "memory": mem_rows}
    if not args.no_corpus:
        lines, footage = real_footage(work, args)
        report += lines
        data.update(footage)
    return write_report(args, started, report, data)


def real_footage(work: Path, args: Any) -> tuple[list[str], dict[str, Any]]:
    """The corpus table and the fixed cost per job: report lines and their data."""
    rows = corpus(work, args.formats.split(","), not args.no_naive, args.clips)
    fixed = fixed_cost(work, ["selfie", "general"])
    return ["", *corpus_report(rows), "", *fixed_report(fixed)], {"corpus": rows, "fixed": fixed}


def corpus_report(rows: list[list[Any]]) -> list[str]:
    return [
        "Real footage (make footage; Megamind_720p is Megamind.avi scaled to 1280x720): engine "
        "fps = decode to encoded file; job fps adds the input probe and the output's "
        "verification; naive = the same model on every full frame, one thread, one frame at a "
        "time. Flicker = mean |alpha_t - alpha_t-1| x1e3 and fg fraction = share of alpha >= "
        "0.5, both on the output's sampled frames.",
        "",
        table(CORPUS_HEAD, rows),
    ]


def fixed_report(rows: list[list[Any]]) -> list[str]:
    return [
        "Fixed cost per job, model warm in the process: a job (engine, input facts, "
        "verification; transparent webm_vp9) on the first 24 and 120 frames of Megamind.avi at "
        "176x144, best of 3; fixed = the job time extrapolated to zero frames.",
        "",
        table(["model", "24 frames s", "120 frames s", "ms a frame", "fixed s"], rows),
    ]


def write_report(args: Any, started: dt.datetime, report: list[str], data: dict[str, Any]) -> int:
    text = "\n".join(report) + "\n"
    print()
    print(text)
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    suffix = f"-{args.label}" if args.label else ""
    out = results / f"engine-{started:%Y-%m-%d}{suffix}.md"
    out.write_text(text)
    (results / f"engine-{started:%Y-%m-%d}{suffix}.json").write_text(json.dumps(data, indent=1))
    print(f"written to {out.relative_to(ROOT.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
