"""A fake fal.ai queue server on loopback: real HTTP, real output videos, injectable faults.

It speaks the parts of fal's protocol that matteflow uses (FACTS.md):

* ``POST /{owner}/{app}[/{path}]``             submit -> ``{request_id, status_url, response_url, cancel_url, queue_position}``
* ``GET  /{owner}/{app}/requests/{id}/status`` 202 ``IN_QUEUE``/``IN_PROGRESS``, 200 ``COMPLETED`` (+ ``metrics``, ``error``, ``error_type``)
* ``GET  /{owner}/{app}/requests/{id}/status/stream`` server-sent events: one ``data:`` line with the
  status JSON now and at each change, the stream ends after ``COMPLETED`` (as fal-js reads it)
* ``GET  /{owner}/{app}/requests/{id}``        the result (200), 422 ``{"detail": [{loc, msg, type}]}``, 400 while running
* ``PUT  /{owner}/{app}/requests/{id}/cancel`` 202 ``CANCELLATION_REQUESTED`` / 400 ``ALREADY_COMPLETED`` / 404 ``NOT_FOUND``
* ``POST /storage/upload/initiate``            -> ``{upload_url, file_url}``; ``PUT upload_url`` stores the bytes (old flow)
* ``POST /storage/auth/token?storage_type=fal-cdn-v3`` -> ``{token, token_type, base_url, expires_at}``
* ``POST /files/upload``                       (CDN token) body streamed to disk -> ``{access_url}``; 413 over ``upload_limit_bytes``
* ``POST /files/upload/multipart``             -> ``{access_url, uploadId}``; ``PUT {access_url}/multipart/{id}/{n}`` -> ``ETag``;
  ``POST {access_url}/multipart/{id}/complete`` ``{"parts": [{partNumber, etag}]}`` joins the parts
* ``GET  /files/{token}/{name}``               the "CDN": uploaded inputs, outputs, and files from ``serve_file``

Apps: ``pixelcut/video-background-removal`` and ``fal-ai/birefnet/v2/video``. Jobs run on a pool
of ``concurrency`` workers (fal's per-account cap: the rest wait ``IN_QUEUE``); each takes
``latency_s`` and then re-encodes its input into the requested format through the local engine's
pipeline with a synthetic elliptical matte, so outputs decode, carry alpha when asked, and keep
the input's frame count. ``reuse_outputs`` encodes each (input, options) once and serves the same
bytes for repeats: with a tiny input clip that is the benchmark mode "fixed latency L, tiny output".

Stable API (issue 5 benchmarks rely on it)::

    fake = FakeFal(workdir, latency_s=0.2, concurrency=2, key="test-key").start()
    fake.queue_url / fake.rest_url / fake.base_url      # point FAL_QUEUE_URL / FAL_REST_URL here
    fake.serve_file(path) -> "http://127.0.0.1:PORT/files/…"   # an input fal can "reach"
    fake.faults = Faults(rate=0.2, kinds=("429", "503", "drop"), calls=("status",), seed=1)
    fake.fail_inputs / fake.reject_inputs               # substrings of video_url: job error / 422
    fake.invert_mask_inputs                             # substrings: mask disagrees with the video
    fake.accepted["pixelcut/video-background-removal"]  # jobs accepted per app
    fake.accepted_inputs[(app, video_url)]              # jobs accepted per app and input
    fake.peak_in_progress, fake.in_progress, fake.calls[(kind, status)], fake.injected[kind]
    fake.status_stream = "on" | "off" (404: no stream here) | "cut" (dropped after the first event)
    fake.detect_delays                                  # s from a job's end to its first COMPLETED sent
    fake.stats() -> dict (a snapshot of the counters); fake.reset_counters(); fake.stop()

Harder behaviours (issue 13), each off by default::

    fake.faults = Faults(kinds=("500",), calls=("status",))  # fal's own 500s, with request ids
    fake.locked = "User is locked. Reason: Exhausted balance…"  # 403 on every API call
    fake.forbid_output_inputs / fake.half_size_inputs      # substrings: CDN 403 / half-size output
    fake.upload_limit_bytes, fake.uploads_seen               # 413 above it; (kind, bytes) per upload
    fake.null_metrics, fake.unknown_status                   # "metrics": null / an unknown status
    fake.submit_headers                                      # the headers of every accepted submit
pixelcut's ``background_color`` must be an object ``{r, g, b}`` (else the result is a 422), and
``X-Fal-Request-Timeout`` gives up a job not started in time (result: 504 with
``X-Fal-Request-Timeout-Type: user``).

Paid-once switches (issue 12), as fal's documentation describes fal (FACTS.md)::

    fake.cancel_stops_running = False   # fal: a running job keeps running (and billing) after a
                                        # cancel unless the app handles it; True: the app does
    fake.result_ttl_s = 3600.0          # a result is kept 1 h after the job ends …
    fake.large_result_ttl_s = 360.0     # … 6 min when it is 10 KB or larger; then its
                                        # response_url answers 404 (the status stays COMPLETED)
    arguments["sync_mode"] = True       # outputs inline as data URIs, and the result is not kept:
                                        # the first read gets it, later reads 404
    fake.ran_inputs[(app, video_url)]   # billing: jobs a runner actually started, per input
    fake.short_downloads = N            # the next N output downloads end early (a short body
                                        # with a matching Content-Length: only a size check sees it)
    fake.stall_results / fake.stall_files  # result GETs for these input substrings / output
                                        # downloads wait while set (to kill a run at that point)

``FakeFal`` is also a context manager. The ``fake_fal`` fixture in tests/conftest.py gives a
fresh one per test with zero latency and FAL_* environment variables pointing at it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av
import httpx
import numpy as np

from tasks.endpoints.options import RemovalOptions
from tasks.engine.pipeline import remove_background
from tasks.media.formats import OutputFormat, spec_for

PIXELCUT = "pixelcut/video-background-removal"
BIREFNET = "fal-ai/birefnet/v2/video"
APPS = (PIXELCUT, BIREFNET)
BIREFNET_TYPES = {
    "X264 (.mp4)": OutputFormat.mp4_h264,
    "VP9 (.webm)": OutputFormat.webm_vp9,
    "PRORES4444 (.mov)": OutputFormat.mov_proresks,
    "GIF (.gif)": OutputFormat.gif,
}
NGINX_503 = b"<html><head><title>503 Service Temporarily Unavailable</title></head></html>"
LARGE_RESULT_BYTES = 10_000  # fal keeps results this large or larger for 6 minutes only
STALL_LIMIT_S = 120.0


@dataclass
class Faults:
    """Random transient faults: each matching call fails with probability ``rate``.

    kinds: "429" (Retry-After: ``retry_after``), "503" (nginx ingress page, no
    x-fal-request-id), "500" (fal's own error: JSON, ``x-fal-request-id``, an error type; on a
    submit the job is NOT created), "drop" (connection closed without a response; on submit the
    job is NOT created). calls: which calls may fail: submit, status, stream (the status stream's
    opening request; not in the default set), result, cancel, upload, file (GET of
    an output on the CDN), input (GET of a served or uploaded input: by the client's probe and by
    the fake's own workers).
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "503", "drop")
    calls: tuple[str, ...] = ("submit", "status", "result", "cancel", "upload", "file")
    retry_after: str | None = "0"
    seed: int = 0
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pick(self, call: str) -> str | None:
        if self.rate <= 0 or call not in self.calls or self.rng.random() >= self.rate:
            return None
        return self.rng.choice(self.kinds)


@dataclass
class FakeJob:
    id: str
    app: str
    root: str  # owner/app: the prefix of the request URLs
    arguments: dict[str, Any]
    state: str = "IN_QUEUE"
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    cancelled: bool = False
    seen_done: bool = False  # a COMPLETED status was sent for it (poll or stream)
    changed: threading.Condition | None = None  # notified (under the fake's lock) on each change
    result: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    validation: list[dict[str, Any]] | None = None
    start_timeout_s: float | None = None  # X-Fal-Request-Timeout of its submit
    start_timed_out: bool = False  # not started within it: given up, unbilled
    result_reads: int = 0


def app_of(path: str) -> str | None:
    for app in APPS:
        if path.strip("/") == app:
            return app
    return None


class _Ellipse:
    """A soft elliptical matte: cheap, deterministic, and partly transparent."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], Any] = {}

    def __call__(self, rgb: Any) -> Any:
        h, w = rgb.shape[:2]
        if (h, w) not in self._cache:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            d = ((xx - w / 2) / (w * 0.3)) ** 2 + ((yy - h / 2) / (h * 0.4)) ** 2
            self._cache[(h, w)] = np.clip(1.5 - d, 0.0, 1.0).astype(np.float32)
        return self._cache[(h, w)]

    def close(self) -> None:
        pass


def write_mask(src: Path, dst: Path, *, invert: bool = False) -> None:
    """The matte as a grey H.264 video, one frame per input frame (inverted: a broken mask)."""
    seg = _Ellipse()
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        vin = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=vin.average_rate or 25)
        stream.width, stream.height, stream.pix_fmt = (
            vin.codec_context.width,
            vin.codec_context.height,
            "yuv420p",
        )
        stream.options = {"preset": "ultrafast"}
        for i, frame in enumerate(inp.decode(vin)):
            rgb = frame.to_ndarray(format="rgb24")
            matte = seg(rgb)
            grey = ((1.0 - matte if invert else matte) * 255).astype(np.uint8)
            new = av.VideoFrame.from_ndarray(np.dstack([grey] * 3), format="rgb24")
            new.pts = i
            out.mux(stream.encode(new))
        out.mux(stream.encode(None))


def rgb_problems(job: FakeJob) -> list[dict[str, Any]]:
    """pixelcut's RGBColor is an object of three 0-255 integers: anything else is a 422."""
    colour = job.arguments.get("background_color")
    if colour is None:
        return []
    ok = isinstance(colour, dict) and set(colour) == {"r", "g", "b"}
    ok = ok and all(isinstance(v, int) and 0 <= v <= 255 for v in colour.values())
    if ok:
        return []
    return [
        {
            "loc": ["body", "background_color"],
            "msg": "Input should be a valid dictionary or instance of RGBColor",
            "type": "model_type",
        }
    ]


def write_half_size(src: Path, dst: Path) -> None:
    """The input at half its width and height (a broken endpoint that resizes)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="matroska") as out:
        vin = inp.streams.video[0]
        stream = out.add_stream("ffv1", rate=vin.average_rate or 25)
        stream.width = max(2, vin.codec_context.width // 2 // 2 * 2)
        stream.height = max(2, vin.codec_context.height // 2 // 2 * 2)
        stream.pix_fmt = "yuv420p"
        for i, frame in enumerate(inp.decode(vin)):
            small = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
            small.pts, small.time_base = i, Fraction(1, 1) / (vin.average_rate or 25)
            out.mux(stream.encode(small))
        out.mux(stream.encode(None))


class FakeFal:
    """See the module docstring; every public attribute is safe to read while it runs."""

    def __init__(
        self,
        workdir: Path,
        *,
        latency_s: float = 0.0,
        concurrency: int = 2,
        key: str = "test-key",
        reuse_outputs: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        self.files_dir = self.workdir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.latency_s = latency_s
        self.concurrency = concurrency
        self.key = key
        self.reuse_outputs = reuse_outputs
        self.faults = Faults()
        self.drop_after_accept = 0  # the next N submits are accepted, then the connection drops
        self.hang_s = 0.0  # every response waits this long first (client timeouts)
        self.forbidden = False  # answer 403 to everything (a revoked key)
        self.fail_inputs: set[str] = set()  # video_url substrings: job COMPLETED with error
        self.reject_inputs: set[str] = set()  # video_url substrings: result is a 422
        self.invert_mask_inputs: set[str] = set()  # video_url substrings: mask is inverted
        self.locked: str | None = None  # 403 {"detail": locked} on every API call
        self.forbid_output_inputs: set[str] = set()  # video_url substrings: output CDN 403
        self.half_size_inputs: set[str] = set()  # video_url substrings: output at half size
        self.upload_limit_bytes: int | None = None  # single uploads and parts above it: 413
        self.null_metrics = False  # COMPLETED with "metrics": null
        self.unknown_status: str | None = None  # status polls answer this status string
        self.queue_wait_s = 0.0  # every job waits this long IN_QUEUE before a runner takes it
        self.runners_free = threading.Event()  # cleared: every job stays IN_QUEUE until set
        self.runners_free.set()
        self.forbidden_tokens: set[str] = set()
        self.cdn_token = uuid.uuid4().hex
        self._multipart: dict[str, dict[str, Any]] = {}
        self.cancel_stops_running = False  # fal's default: a running job ignores a cancel
        self.result_ttl_s = 3600.0
        self.large_result_ttl_s = 360.0
        self.short_downloads = 0
        self.stall_results: set[str] = set()  # video_url substrings: result GETs wait
        self.stall_files = False  # output downloads wait while True
        self._stopping = False
        self.status_stream = "on"  # "off": the stream answers 404; "cut": dropped mid-job
        self.jobs: dict[str, FakeJob] = {}
        self._lock = threading.Lock()
        self._outputs: dict[str, dict[str, Any]] = {}
        self.output_tokens: set[str] = set()
        self._output_locks: dict[str, threading.Lock] = {}
        self.reset_counters()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fakefal")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeFal:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self.runners_free.set()
        self.stall_results.clear()
        self.stall_files = False
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for job in self.jobs.values():
            job.cancelled = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FakeFal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeFal is not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    queue_url = base_url
    rest_url = base_url

    def env(self) -> dict[str, str]:
        """Environment variables that point matteflow at this server."""
        return {"FAL_KEY": self.key, "FAL_QUEUE_URL": self.base_url, "FAL_REST_URL": self.base_url}

    # -- counters --------------------------------------------------------------------------

    def reset_counters(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.accepted_inputs: Counter[tuple[str, str]] = Counter()
        self.ran_inputs: Counter[tuple[str, str]] = Counter()  # billed: a runner started it
        self.calls: Counter[tuple[str, int]] = Counter()  # (kind, HTTP status or 0 = dropped)
        self.injected: Counter[str] = Counter()
        self.in_progress = 0
        self.peak_in_progress = 0
        self.completed = 0
        self.cancelled = 0
        self.encodes = 0
        self.submit_headers: list[dict[str, str]] = []
        self.uploads_seen: list[tuple[str, int]] = []  # (single|part|complete, bytes)
        self.detect_delays: list[float] = []

    def count(self, kind: str, status: int) -> None:
        with self._lock:
            self.calls[(kind, status)] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "accepted": dict(self.accepted),
                "accepted_total": sum(self.accepted.values()),
                "ran_total": sum(self.ran_inputs.values()),
                "in_progress": self.in_progress,
                "peak_in_progress": self.peak_in_progress,
                "completed": self.completed,
                "cancelled": self.cancelled,
                "encodes": self.encodes,
                "injected": dict(self.injected),
                "calls": {f"{k}:{s}": n for (k, s), n in sorted(self.calls.items())},
                "detect_delay_s": _delay_stats(self.detect_delays),
            }

    def note_seen(self, job: FakeJob) -> None:
        """A COMPLETED status is going out: the first one measures how late the client learns."""
        with self._lock:
            if not job.seen_done and job.finished_at is not None:
                job.seen_done = True
                self.detect_delays.append(time.monotonic() - job.finished_at)

    # -- files -----------------------------------------------------------------------------

    def serve_file(self, path: Path, name: str | None = None) -> str:
        """Publish a local file on the fake CDN; returns its URL."""
        token = uuid.uuid4().hex[:12]
        dest = self.files_dir / token
        dest.mkdir()
        name = name or Path(path).name
        (dest / name).write_bytes(Path(path).read_bytes())
        return f"{self.base_url}/files/{token}/{name}"

    def _publish(self, path: Path, name: str) -> str:
        token = uuid.uuid4().hex[:12]
        self.output_tokens.add(token)
        dest = self.files_dir / token
        dest.mkdir()
        path.rename(dest / name)
        return f"{self.base_url}/files/{token}/{name}"

    # -- jobs ------------------------------------------------------------------------------

    def submit(
        self, app: str, arguments: dict[str, Any], headers: dict[str, str] | None = None
    ) -> FakeJob:
        root = "/".join(app.split("/")[:2])
        job = FakeJob(id=str(uuid.uuid4()), app=app, root=root, arguments=arguments)
        timeout = (headers or {}).get("x-fal-request-timeout")
        job.start_timeout_s = float(timeout) if timeout else None
        job.changed = threading.Condition(self._lock)
        with self._lock:
            self.submit_headers.append(dict(headers or {}))
            self.jobs[job.id] = job
            self.accepted[app] += 1
            self.accepted_inputs[(app, str(arguments.get("video_url")))] += 1
        self._pool.submit(self._run, job)
        return job

    def _run(self, job: FakeJob) -> None:
        self.runners_free.wait()
        if self.queue_wait_s:
            time.sleep(self.queue_wait_s)
        if job.cancelled:
            return
        waited = time.monotonic() - job.submitted_at
        if job.start_timeout_s is not None and waited > job.start_timeout_s:
            with self._lock:  # fal gives it up before any runner starts: no charge
                job.start_timed_out, job.state = True, "COMPLETED"
                job.finished_at = time.monotonic()
                self.completed += 1
            return
        with self._lock:
            job.state, job.started_at = "IN_PROGRESS", time.monotonic()
            self.in_progress += 1
            self.peak_in_progress = max(self.peak_in_progress, self.in_progress)
            self.ran_inputs[(job.app, str(job.arguments.get("video_url")))] += 1
            self._notify(job)
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            if job.cancelled and (self.cancel_stops_running or self._stopping):
                job.error, job.error_type = "Request cancelled while running", "request_cancelled"
            else:
                self._process(job)
        except Exception as exc:  # the fake reports its own failures like fal would
            job.error, job.error_type = f"{type(exc).__name__}: {exc}", "internal_error"
        finally:
            with self._lock:
                self.in_progress -= 1
                job.finished_at = time.monotonic()
                job.state = "COMPLETED"
                self.completed += 1
                self._notify(job)

    @staticmethod
    def _notify(job: FakeJob) -> None:
        """Wake the job's status streams; the caller holds the fake's lock."""
        if job.changed is not None:
            job.changed.notify_all()

    def _process(self, job: FakeJob) -> None:
        url = str(job.arguments.get("video_url") or "")
        if any(s in url for s in self.reject_inputs):
            job.validation = [
                {
                    "loc": ["body", "video_url"],
                    "msg": "Unsupported video: could not decode the input",
                    "type": "video_invalid",
                }
            ]
            return
        if any(s in url for s in self.fail_inputs):
            job.error, job.error_type = "Internal error while processing the video", "runner_error"
            return
        problems = rgb_problems(job) if job.app == PIXELCUT else []
        if problems:
            job.validation = problems
            return
        job.result = self._render(job)
        if job.arguments.get("sync_mode"):
            job.result = self._inline(job.result)

    def _inline(self, result: dict[str, Any]) -> dict[str, Any]:
        """sync_mode: every output file as a data URI instead of a CDN URL."""
        for name in ("video", "mask_video"):
            file = result.get(name)
            if isinstance(file, dict):
                rel = urlsplit(str(file["url"])).path[len("/files/") :]
                data = base64.b64encode((self.files_dir / rel).read_bytes()).decode()
                file["url"] = f"data:{file.get('content_type') or 'video/mp4'};base64,{data}"
        return result

    def result_expired(self, job: FakeJob) -> bool:
        """fal keeps a result 1 h (6 min when 10 KB or larger); a sync_mode one not at all."""
        if job.result is None:
            return False
        if job.arguments.get("sync_mode") and job.result_reads > 0:
            return True
        ttl = self.result_ttl_s
        if len(json.dumps(job.result)) >= LARGE_RESULT_BYTES:
            ttl = min(ttl, self.large_result_ttl_s)
        return time.monotonic() - (job.finished_at or time.monotonic()) >= ttl

    def stall(self, waiting: Any) -> None:
        """Hold a response while ``waiting()`` is true (bounded; stop() releases every one)."""
        deadline = time.monotonic() + STALL_LIMIT_S
        while waiting() and not self._stopping and time.monotonic() < deadline:
            time.sleep(0.02)

    def _render(self, job: FakeJob) -> dict[str, Any]:
        args = job.arguments
        if job.app == PIXELCUT:
            values = {k: args[k] for k in ("background", "output_format") if k in args}
            colour = args.get("background_color")
            if isinstance(colour, dict):
                values["background_color"] = (colour["r"], colour["g"], colour["b"])
            options = RemovalOptions.model_validate(values)
            want_mask = False
        else:
            fmt = BIREFNET_TYPES[args.get("video_output_type", "X264 (.mp4)")]
            transparent = spec_for(fmt).carries_alpha
            options = RemovalOptions(
                background="transparent" if transparent else "black", output_format=fmt
            )
            want_mask = bool(args.get("output_mask"))
        cache_key = hashlib.sha256(
            json.dumps(
                [
                    job.app,
                    args.get("video_url"),
                    options.model_dump(mode="json"),
                    want_mask,
                    self._marks(str(args.get("video_url"))),
                ]
            ).encode()
        ).hexdigest()
        with self._lock:
            lock = self._output_locks.setdefault(cache_key, threading.Lock())
        with lock:
            cached = self._outputs.get(cache_key) if self.reuse_outputs else None
            if cached is None:
                cached = self._encode(job, options, want_mask)
                self._outputs[cache_key] = cached
        return json.loads(json.dumps(cached))

    def _encode(self, job: FakeJob, options: RemovalOptions, want_mask: bool) -> dict[str, Any]:
        spec = spec_for(options.resolved_format)
        work = self.workdir / "work" / job.id
        work.mkdir(parents=True)
        src = work / "input"
        url = str(job.arguments["video_url"])
        host = urlsplit(url).hostname
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the fake fetches only loopback inputs, not {host}")
        with httpx.stream("GET", url, timeout=30) as resp:
            resp.raise_for_status()
            with src.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
        if any(x in url for x in self.half_size_inputs):
            half = work / "half.mkv"
            write_half_size(src, half)
            src = half
        out = work / f"out{spec.extension}"
        res = remove_background(src, out, options, segmenter=_Ellipse(), smoothing=1.0)
        with self._lock:
            self.encodes += 1
        size = out.stat().st_size
        name = f"{job.id}{spec.extension}"
        video = {
            "url": self._publish(out, name),
            "content_type": spec.content_type,
            "file_name": name,
            "file_size": size,
        }
        if any(x in url for x in self.forbid_output_inputs):  # the CDN refuses this file
            self.forbidden_tokens.add(urlsplit(video["url"]).path.split("/")[2])
        result: dict[str, Any] = {"video": video}
        if job.app == BIREFNET:
            meta = {
                "width": res.width,
                "height": res.height,
                "fps": res.fps,
                "duration": res.duration_s,
                "num_frames": res.frames,
            }
            video.update(meta)
            result["mask_video"] = None
            if want_mask:
                mask = work / "mask.mp4"
                url = str(job.arguments.get("video_url", ""))
                write_mask(src, mask, invert=any(x in url for x in self.invert_mask_inputs))
                mname = f"{job.id}-mask.mp4"
                msize = mask.stat().st_size
                result["mask_video"] = {
                    "url": self._publish(mask, mname),
                    "content_type": "video/mp4",
                    "file_name": mname,
                    "file_size": msize,
                    **meta,
                }
        return result

    def _marks(self, url: str) -> list[bool]:
        """The fault marks of an input that change its rendered output (part of its cache key)."""
        return [
            any(x in url for x in self.half_size_inputs),
            any(x in url for x in self.forbid_output_inputs),
        ]

    def cancel(self, job: FakeJob) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if job.state == "COMPLETED":
                return 400, {"status": "ALREADY_COMPLETED"}
            job.cancelled = True
            self.cancelled += 1
            if job.state == "IN_QUEUE":
                job.state = "COMPLETED"
                job.finished_at = time.monotonic()
                job.error, job.error_type = "Request cancelled", "request_cancelled"
                self._notify(job)
        return 202, {"status": "CANCELLATION_REQUESTED"}

    def queue_position(self, job: FakeJob) -> int:
        with self._lock:
            return sum(
                1
                for j in self.jobs.values()
                if j.state == "IN_QUEUE" and j.submitted_at < job.submitted_at
            )


def _delay_stats(delays: list[float]) -> dict[str, float | int | None]:
    if not delays:
        return {"n": 0, "mean": None, "p95": None, "max": None}
    ordered = sorted(delays)
    return {
        "n": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 4),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4),
        "max": round(ordered[-1], 4),
    }


class _QuietServer(ThreadingHTTPServer):
    """Clients dropping connections (timeouts, kills) is expected here, not worth a traceback."""

    # socketserver's backlog of 5 overflows when many clients connect at once; Linux then resets
    # connections the client already sent a request on, which looks like a dropped submit.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeFal

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing --------------------------------------------------------------------------

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._left = int(self.headers.get("Content-Length") or 0) if ok else 0
        return ok

    def _unread(self) -> int:
        """Bytes of this request's body not read yet."""
        return self._left

    def _body(self) -> bytes:
        length = self._unread()
        self._left = 0
        return self.rfile.read(length) if length else b""

    def _drain(self) -> None:
        """Read and drop the rest of the body, so an early answer keeps the connection sane."""
        left = self._unread()
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        self._left = 0

    def _body_to(self, dest: Path) -> int:
        """Stream the request body to ``dest`` a chunk at a time; returns its size."""
        left = self._unread()
        self._left = 0
        size = 0
        with dest.open("wb") as fh:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                fh.write(chunk)
                size += len(chunk)
                left -= len(chunk)
        return size

    def _too_large(self, kind: str) -> bool:
        """413 (and the connection closed, the body unread) above ``upload_limit_bytes``."""
        limit = self.server_fake.upload_limit_bytes
        length = int(self.headers.get("Content-Length") or 0)
        if limit is None or length <= limit:
            return False
        self._send(413, {"detail": f"File too large: {length} bytes, limit {limit}"}, kind=kind)
        return True

    def _send(
        self, status: int, payload: Any, *, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self._drain()
        # Counted before the answer leaves: a client that has its answer finds it counted.
        self.server_fake.count(kind, status)
        self.send_response(status)
        ctype = "text/html" if isinstance(payload, bytes) else "application/json"
        self.send_header("Content-Type", (headers or {}).pop("Content-Type", ctype))
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _drop(self, kind: str) -> None:
        self.server_fake.count(kind, 0)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(2)

    def _fault(self, kind: str) -> bool:
        """Inject a transient fault for this call; True when the request is already answered."""
        fake = self.server_fake
        if fake.hang_s:
            time.sleep(fake.hang_s)
        choice = fake.faults.pick(kind)
        if choice is None:
            return False
        with fake._lock:
            fake.injected[choice] += 1
        if choice == "429":
            headers = {"X-Fal-Error-Type": "rate_limited"}
            if fake.faults.retry_after is not None:
                headers["Retry-After"] = fake.faults.retry_after
            self._send(429, {"detail": "Too many requests"}, kind=kind, headers=headers)
        elif choice == "503":
            self._send(503, NGINX_503, kind=kind)
        elif choice == "500":
            headers = {
                "x-fal-request-id": uuid.uuid4().hex,
                "X-Fal-Error-Type": "internal_server_error",
            }
            self._send(500, {"detail": "Internal Server Error"}, kind=kind, headers=headers)
        else:
            self._drop(kind)
        return True

    def _authorized(self, kind: str) -> bool:
        fake = self.server_fake
        if fake.locked is not None:
            self._send(403, {"detail": fake.locked}, kind=kind)
            return False
        if fake.forbidden:
            self._send(403, {"detail": "Forbidden"}, kind=kind)
            return False
        if self.headers.get("Authorization") != f"Key {fake.key}":
            self._send(401, {"detail": "Invalid or missing credentials"}, kind=kind)
            return False
        return True

    def _request_target(self) -> tuple[FakeJob | None, str]:
        """(job, what) for …/requests/{id}[/status|/cancel]."""
        parts = urlsplit(self.path).path.strip("/").split("/")
        if "requests" not in parts:
            return None, ""
        i = parts.index("requests")
        rid = parts[i + 1] if len(parts) > i + 1 else ""
        what = "/".join(parts[i + 2 :]) or "result"
        job = self.server_fake.jobs.get(rid)
        if job is not None and "/".join(parts[:i]) != job.root:
            job = None
        return job, what

    # -- verbs -----------------------------------------------------------------------------

    def _cdn_authorized(self, kind: str) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.server_fake.cdn_token}":
            self._send(401, {"detail": "Invalid or expired upload token"}, kind=kind)
            return False
        return True

    def _upload_post(self, path: str) -> bool:
        """The CDN token and the v3 CDN's uploads (fal_client); False when not one of them."""
        fake = self.server_fake
        if path == "/storage/auth/token":
            self._body()
            if self._fault("upload") or not self._authorized("upload"):
                return True
            expires = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600))
            token = {"token": fake.cdn_token, "token_type": "Bearer", "expires_at": expires}
            self._send(200, {**token, "base_url": fake.base_url}, kind="upload")
            return True
        if path in ("/files/upload", "/files/upload/multipart"):
            if self._fault("upload") or not self._cdn_authorized("upload"):
                return True
            name = Path(self.headers.get("X-Fal-File-Name") or "upload.bin").name
            token = uuid.uuid4().hex[:12]
            access = f"{fake.base_url}/files/{token}/{name}"
            dest = fake.files_dir / token
            dest.mkdir()
            if path.endswith("/multipart"):
                self._body()
                upload_id = uuid.uuid4().hex
                fake._multipart[upload_id] = {"dest": dest / name, "parts": {}}
                self._send(200, {"access_url": access, "uploadId": upload_id}, kind="upload")
                return True
            if self._too_large("upload"):
                return True
            size = self._body_to(dest / name)
            with fake._lock:
                fake.uploads_seen.append(("single", size))
            self._send(200, {"access_url": access}, kind="upload")
            return True
        if "/multipart/" in path and path.endswith("/complete"):
            return self._complete_multipart(path)
        return False

    def _complete_multipart(self, path: str) -> bool:
        fake = self.server_fake
        body = self._body()
        if self._fault("upload") or not self._cdn_authorized("upload"):
            return True
        upload_id = path.split("/multipart/")[1].split("/")[0]
        upload = fake._multipart.get(upload_id)
        parts = json.loads(body or b"{}").get("parts", [])
        if upload is None:
            self._send(404, {"detail": "Unknown upload"}, kind="upload")
            return True
        numbers = sorted(int(p["partNumber"]) for p in parts)
        etags = {int(p["partNumber"]): p["etag"] for p in parts}
        stored = upload["parts"]
        if numbers != list(range(1, len(numbers) + 1)) or any(
            stored.get(n, (None, ""))[1] != etags[n] for n in numbers
        ):
            self._send(400, {"detail": "Parts missing or ETags wrong"}, kind="upload")
            return True
        total = 0
        with upload["dest"].open("wb") as out:
            for n in numbers:
                part_path = stored[n][0]
                with part_path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        out.write(chunk)
                        total += len(chunk)
                part_path.unlink()
        with fake._lock:
            fake.uploads_seen.append(("complete", total))
        self._send(200, {"ok": True}, kind="upload")
        return True

    def do_POST(self) -> None:
        fake = self.server_fake
        path = urlsplit(self.path).path
        if self._upload_post(path):
            return
        body = self._body()
        if path == "/storage/upload/initiate":
            if self._fault("upload") or not self._authorized("upload"):
                return
            meta = json.loads(body or b"{}")
            token = uuid.uuid4().hex[:12]
            name = Path(str(meta.get("file_name") or "file.bin")).name
            self._send(
                200,
                {
                    "upload_url": f"{fake.base_url}/upload/{token}/{name}",
                    "file_url": f"{fake.base_url}/files/{token}/{name}",
                },
                kind="upload",
            )
            return
        app = app_of(path)
        if app is None:
            self._send(404, {"detail": f"Application not found: {path}"}, kind="submit")
            return
        if self._fault("submit") or not self._authorized("submit"):
            return
        try:
            arguments = json.loads(body)
        except ValueError:
            self._send(400, {"detail": "body is not JSON"}, kind="submit")
            return
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-fal")}
        job = fake.submit(app, arguments, headers)
        with fake._lock:
            drop = fake.drop_after_accept > 0
            fake.drop_after_accept -= int(drop)
        if drop:
            self._drop("submit")
            return
        base = f"{fake.base_url}/{job.root}/requests/{job.id}"
        self._send(
            200,
            {
                "request_id": job.id,
                "status_url": f"{base}/status",
                "response_url": base,
                "cancel_url": f"{base}/cancel",
                "queue_position": fake.queue_position(job),
            },
            kind="submit",
            headers={"x-fal-request-id": job.id},
        )

    def do_GET(self) -> None:
        fake = self.server_fake
        path = urlsplit(self.path).path
        if path.startswith("/files/"):
            token = path[len("/files/") :].partition("/")[0]
            if self._fault("file" if token in fake.output_tokens else "input"):
                return
            target = fake.files_dir / path[len("/files/") :]
            if ".." in path or not target.is_file():
                self._send(404, {"detail": "Not found"}, kind="file")
                return
            if token in fake.forbidden_tokens:
                self._send(403, {"detail": "Access denied: this file is private"}, kind="file")
                return
            body = target.read_bytes()
            if token in fake.output_tokens:
                fake.stall(lambda: fake.stall_files)
                with fake._lock:
                    short = fake.short_downloads > 0
                    fake.short_downloads -= int(short)
                if short:
                    body = body[: len(body) // 2]
            self._send(
                200,
                body,
                kind="file",
                headers={"Content-Type": "application/octet-stream"},
            )
            return
        job, what = self._request_target()
        kind = {"status": "status", "status/stream": "stream"}.get(what, "result")
        if self._fault(kind) or not self._authorized(kind):
            return
        if kind == "stream" and fake.status_stream == "off":
            self._send(404, {"detail": "Not found"}, kind=kind)
            return
        if job is None:
            self._send(404, {"detail": "Request not found"}, kind=kind)
            return
        if kind == "stream":
            self._stream(job, parse_qs(urlsplit(self.path).query))
        elif kind == "status":
            self._status(job, parse_qs(urlsplit(self.path).query))
        else:
            self._result(job)

    def _status_payload(self, job: FakeJob, query: dict[str, list[str]]) -> dict[str, Any]:
        if self.server_fake.unknown_status is not None:
            return {"status": self.server_fake.unknown_status}
        if job.state == "IN_QUEUE":
            return {"status": "IN_QUEUE", "queue_position": self.server_fake.queue_position(job)}
        if job.state == "IN_PROGRESS":
            return {"status": "IN_PROGRESS", "logs": []}
        started = job.started_at
        # A job no runner took (cancelled or given up in the queue) has no inference time.
        ran = (
            {}
            if started is None
            else {"inference_time": round((job.finished_at or started) - started, 4)}
        )
        payload = {"status": "COMPLETED", "logs": [] if query.get("logs") else None, "metrics": ran}
        if self.server_fake.null_metrics or job.start_timed_out:
            payload["metrics"] = None
        if job.error:
            payload["error"], payload["error_type"] = job.error, job.error_type
        self.server_fake.note_seen(job)
        return payload

    def _status(self, job: FakeJob, query: dict[str, list[str]]) -> None:
        payload = self._status_payload(job, query)
        self._send(200 if payload["status"] == "COMPLETED" else 202, payload, kind="status")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, job: FakeJob, query: dict[str, list[str]]) -> None:
        """Server-sent events: the status now and at each change; ends after COMPLETED."""
        fake = self.server_fake
        fake.count("stream", 200)  # before the answer leaves, as in _send
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        last, sent = "", 0
        try:
            while True:
                assert job.changed is not None
                with job.changed:
                    while job.state == last:
                        job.changed.wait(timeout=5.0)
                    last = job.state
                if fake.status_stream == "cut" and sent >= 1:
                    self._drop("stream")  # mid-job, no closing chunk: a cut connection
                    return
                payload = self._status_payload(job, query)
                self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")
                sent += 1
                if last == "COMPLETED":
                    self._chunk(b"")
                    return
        except OSError:
            self.close_connection = True

    def _result(self, job: FakeJob) -> None:
        fake = self.server_fake
        url = str(job.arguments.get("video_url") or "")
        fake.stall(lambda: any(s in url for s in fake.stall_results))
        if job.state != "COMPLETED":
            self._send(400, {"detail": "Request is still in progress"}, kind="result")
        elif job.start_timed_out:
            self._send(
                504,
                {"detail": "Request timed out before processing started"},
                kind="result",
                headers={"X-Fal-Request-Timeout-Type": "user", "x-fal-request-id": job.id},
            )
        elif job.validation is not None:
            self._send(
                422,
                {"detail": job.validation},
                kind="result",
                headers={"X-Fal-Error-Type": "validation_error"},
            )
        elif job.error:
            self._send(
                500,
                {"detail": job.error},
                kind="result",
                headers={"X-Fal-Error-Type": job.error_type or "runner_error"},
            )
        elif fake.result_expired(job):
            self._send(404, {"detail": "Request not found"}, kind="result")
        else:
            with fake._lock:
                job.result_reads += 1
            self._send(200, job.result, kind="result", headers={"x-fal-request-id": job.id})

    def _put_part(self, path: str) -> None:
        """One part of a multipart upload, streamed to disk; its ETag is its MD5."""
        fake = self.server_fake
        if self._fault("upload") or not self._cdn_authorized("upload") or self._too_large("upload"):
            return
        upload_id, _, number = path.split("/multipart/")[1].partition("/")
        upload = fake._multipart.get(upload_id)
        if upload is None:
            self._send(404, {"detail": "Unknown upload"}, kind="upload")
            return
        part_path = upload["dest"].parent / f".part-{upload_id}-{int(number)}"
        size = self._body_to(part_path)
        digest = hashlib.md5()
        with part_path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        etag = f'"{digest.hexdigest()}"'
        with fake._lock:
            upload["parts"][int(number)] = (part_path, etag)
            fake.uploads_seen.append(("part", size))
        self._send(200, {"ok": True}, kind="upload", headers={"ETag": etag})

    def do_PUT(self) -> None:
        fake = self.server_fake
        path = urlsplit(self.path).path
        if path.startswith("/files/") and "/multipart/" in path:
            self._put_part(path)
            return
        body = self._body()
        if path.startswith("/upload/"):
            if self._fault("upload"):
                return
            token, _, name = path[len("/upload/") :].partition("/")
            dest = fake.files_dir / token
            dest.mkdir(exist_ok=True)
            (dest / Path(name).name).write_bytes(body)
            self._send(200, {"ok": True}, kind="upload")
            return
        job, what = self._request_target()
        if self._fault("cancel") or not self._authorized("cancel"):
            return
        if job is None or what != "cancel":
            self._send(404, {"status": "NOT_FOUND"}, kind="cancel")
            return
        status, payload = fake.cancel(job)
        self._send(status, payload, kind="cancel")
