"""A fake fal.ai queue server on loopback: real HTTP, real output videos, injectable faults.

It speaks the parts of fal's protocol that matteflow uses (FACTS.md):

* ``POST /{owner}/{app}[/{path}]``             submit -> ``{request_id, status_url, response_url, cancel_url, queue_position}``
* ``GET  /{owner}/{app}/requests/{id}/status`` 202 ``IN_QUEUE``/``IN_PROGRESS``, 200 ``COMPLETED`` (+ ``metrics``, ``error``, ``error_type``)
* ``GET  /{owner}/{app}/requests/{id}/status/stream`` server-sent events: one ``data:`` line with the
  status JSON now and at each change, the stream ends after ``COMPLETED`` (as fal-js reads it)
* ``GET  /{owner}/{app}/requests/{id}``        the result (200), 422 ``{"detail": [{loc, msg, type}]}``, 400 while running
* ``PUT  /{owner}/{app}/requests/{id}/cancel`` 202 ``CANCELLATION_REQUESTED`` / 400 ``ALREADY_COMPLETED`` / 404 ``NOT_FOUND``
* ``POST /storage/upload/initiate``            -> ``{upload_url, file_url}``; ``PUT upload_url`` stores the bytes
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

``FakeFal`` is also a context manager. The ``fake_fal`` fixture in tests/conftest.py gives a
fresh one per test with zero latency and FAL_* environment variables pointing at it.
"""

from __future__ import annotations

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


@dataclass
class Faults:
    """Random transient faults: each matching call fails with probability ``rate``.

    kinds: "429" (Retry-After: ``retry_after``), "503" (nginx ingress page, no
    x-fal-request-id), "drop" (connection closed without a response; on submit the job is NOT
    created). calls: which calls may fail: submit, status, stream (the status stream's opening
    request; not in the default set), result, cancel, upload, file (GET of
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
        self.calls: Counter[tuple[str, int]] = Counter()  # (kind, HTTP status or 0 = dropped)
        self.injected: Counter[str] = Counter()
        self.in_progress = 0
        self.peak_in_progress = 0
        self.completed = 0
        self.cancelled = 0
        self.encodes = 0
        self.detect_delays: list[float] = []

    def count(self, kind: str, status: int) -> None:
        with self._lock:
            self.calls[(kind, status)] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "accepted": dict(self.accepted),
                "accepted_total": sum(self.accepted.values()),
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

    def submit(self, app: str, arguments: dict[str, Any]) -> FakeJob:
        root = "/".join(app.split("/")[:2])
        job = FakeJob(id=str(uuid.uuid4()), app=app, root=root, arguments=arguments)
        job.changed = threading.Condition(self._lock)
        with self._lock:
            self.jobs[job.id] = job
            self.accepted[app] += 1
            self.accepted_inputs[(app, str(arguments.get("video_url")))] += 1
        self._pool.submit(self._run, job)
        return job

    def _run(self, job: FakeJob) -> None:
        if job.cancelled:
            return
        with self._lock:
            job.state, job.started_at = "IN_PROGRESS", time.monotonic()
            self.in_progress += 1
            self.peak_in_progress = max(self.peak_in_progress, self.in_progress)
            self._notify(job)
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            if not job.cancelled:
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
        job.result = self._render(job)

    def _render(self, job: FakeJob) -> dict[str, Any]:
        args = job.arguments
        if job.app == PIXELCUT:
            options = RemovalOptions.model_validate(
                {
                    k: args[k]
                    for k in ("background", "background_color", "output_format")
                    if k in args
                }
            )
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
                [job.app, args.get("video_url"), options.model_dump(mode="json"), want_mask]
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

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, payload: Any, *, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        ctype = "text/html" if isinstance(payload, bytes) else "application/json"
        self.send_header("Content-Type", (headers or {}).pop("Content-Type", ctype))
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.server_fake.count(kind, status)

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
        else:
            self._drop(kind)
        return True

    def _authorized(self, kind: str) -> bool:
        fake = self.server_fake
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

    def do_POST(self) -> None:
        fake = self.server_fake
        path = urlsplit(self.path).path
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
        job = fake.submit(app, arguments)
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
            self._send(
                200,
                target.read_bytes(),
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
        if job.state == "IN_QUEUE":
            return {"status": "IN_QUEUE", "queue_position": self.server_fake.queue_position(job)}
        if job.state == "IN_PROGRESS":
            return {"status": "IN_PROGRESS", "logs": []}
        started = job.started_at or job.submitted_at
        payload = {
            "status": "COMPLETED",
            "logs": [] if query.get("logs") else None,
            "metrics": {"inference_time": round((job.finished_at or started) - started, 4)},
        }
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
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        fake.count("stream", 200)
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
        if job.state != "COMPLETED":
            self._send(400, {"detail": "Request is still in progress"}, kind="result")
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
        else:
            self._send(200, job.result, kind="result", headers={"x-fal-request-id": job.id})

    def do_PUT(self) -> None:
        fake = self.server_fake
        path = urlsplit(self.path).path
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
