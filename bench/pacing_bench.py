"""Pacing benchmark: matteflow against the ideal and a bare asyncio + httpx script.

A fake fal queue server on loopback (tests/fakes/fal_server.py) runs N jobs of a fixed latency
L with account concurrency K and returns a tiny valid video. Three clients drive it in turn,
each in its own process (so its peak RSS is its own):

* ``bare``: asyncio + httpx, a semaphore of K: submit, poll, fetch the result JSON, download
  the output. No probe, no verification, no ledger, no Prefect.
* ``matteflow``: the real flow (``remove_backgrounds``) on the ``pixelcut`` endpoint: probe,
  budget guard, submit, poll, download, verify, store, ledger, reports, Prefect.

matteflow watches status on fal's event stream and polls only when it fails; the bare script
polls (the best a person writes by hand), and both poll with the same schedule (set here through
``MATTEFLOW_FAL_POLL_*``). Makespan is the time from the first job start to the last row
(``jobs_s`` in the run summary for matteflow; Prefect start-up and reports are reported apart as
``total_s``). The fake server runs in this process, so this process's CPU time during a case is
the fake's (``fake_cpu_share`` = its share of the CPU the case used); ``detect_mean_s`` is
measured by the fake: from a job's end to the first COMPLETED it sent. The machine is shared:
the absolute seconds are noisy, the ratios to the bare runs measured minutes apart are what count.

    python bench/pacing_bench.py            # 400 jobs of 1 s at 20, 2000 of 2 s at 40 (+ PostgreSQL)
    python bench/pacing_bench.py --quick    # a smoke test of a minute or two
    python bench/pacing_bench.py --cases 2000x40x2 --no-postgres   # one size, temporary server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLL_INITIAL_S = 0.1  # both clients: first status poll after 0.1 s, growing x1.5 to 0.25 s
POLL_MAX_S = 0.25
POLL_FACTOR = 1.5
POLL_JITTER = 0.2
APP = "pixelcut/video-background-removal"
ERROR_MARKERS = ("database is locked", "Traceback", "| ERROR", "Crashed")


# -- the fake account ---------------------------------------------------------------------------


def make_fake(workdir: Path, latency_s: float, concurrency: int) -> Any:
    """The fake fal server, counting jobs accepted and not finished (must never exceed K)."""
    import http.server

    from tests.fakes.fal_server import FakeFal

    # socketserver's listen backlog is 5: a burst of 40+ new connections would then wait for
    # SYN retransmits (1 s and more) and measure the kernel, not the clients. Bench process only.
    http.server.ThreadingHTTPServer.request_queue_size = 1024
    http.server.ThreadingHTTPServer.handle_error = _quiet_error  # type: ignore[method-assign]

    class BenchFal(FakeFal):
        def reset_counters(self) -> None:
            super().reset_counters()
            self.outstanding = 0
            self.peak_outstanding = 0

        def submit(
            self, app: str, arguments: dict[str, Any], headers: dict[str, str] | None = None
        ) -> Any:
            with self._lock:
                self.outstanding += 1
                self.peak_outstanding = max(self.peak_outstanding, self.outstanding)
            return super().submit(app, arguments, headers)

        def _run(self, job: Any) -> None:
            try:
                super()._run(job)
            finally:
                with self._lock:
                    self.outstanding -= 1

        def _render(self, job: Any) -> dict[str, Any]:
            # Inputs differ only by a query string (distinct jobs for matteflow's ledger); the
            # fake encodes each output once and serves the same tiny video for all of them.
            url = str(job.arguments["video_url"]).split("?")[0]
            job.arguments = {**job.arguments, "video_url": url}
            return super()._render(job)

    return BenchFal(workdir, latency_s=latency_s, concurrency=concurrency).start()


def _quiet_error(self: Any, request: Any, client_address: Any) -> None:
    """Clients closing idle keep-alive connections at exit are not errors worth a traceback."""
    exc = sys.exc_info()[1]
    if not isinstance(exc, ConnectionError):
        print(f"fake fal server error: {exc!r}", file=sys.stderr)


# -- the bare baseline ------------------------------------------------------------------------


async def bare_client(
    base: str, key: str, urls: list[str], k: int, out_dir: Path
) -> dict[str, Any]:
    import httpx

    rng = random.Random(1)
    gate = asyncio.Semaphore(k)
    headers = {"Authorization": f"Key {key}"}
    errors = 0

    async def one(client: httpx.AsyncClient, i: int, url: str) -> None:
        nonlocal errors
        async with gate:
            sub = await client.post(f"{base}/{APP}", json={"video_url": url}, headers=headers)
            sub.raise_for_status()
            info = sub.json()
            polls = 0
            while True:
                st = await client.get(info["status_url"], headers=headers)
                if st.status_code == 200 and st.json()["status"] == "COMPLETED":
                    break
                delay = min(POLL_MAX_S, POLL_INITIAL_S * POLL_FACTOR**polls)
                await asyncio.sleep(delay * (1 + POLL_JITTER * rng.uniform(-1, 1)))
                polls += 1
            res = await client.get(info["response_url"], headers=headers)
            if res.status_code != 200:
                errors += 1
                return
            video = await client.get(res.json()["video"]["url"])
            (out_dir / f"{i}.webm").write_bytes(video.content)

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, i, u) for i, u in enumerate(urls)))
        makespan = time.perf_counter() - t0
    return {"makespan_s": makespan, "errors": errors}


def child_bare(args: argparse.Namespace) -> None:
    urls = Path(args.urls).read_text().split()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(bare_client(args.base, args.key, urls, args.k, out))
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("BENCH-RESULT " + json.dumps(result), flush=True)


# -- matteflow ----------------------------------------------------------------------------------


def child_matteflow(args: argparse.Namespace) -> None:
    from flows.params import RunParams
    from flows.removal import remove_backgrounds

    params = RunParams(
        manifest=args.manifest,
        endpoint="pixelcut",
        output=args.output,
        run_name="bench",
        max_in_flight=args.k,
        shared_limit=args.shared_limit or None,
        allow_local_inputs=True,
        task_run_per_job={"auto": None, "on": True, "off": False}[args.task_run_mode],
    )
    t0 = time.perf_counter()
    summary = asyncio.run(remove_backgrounds(params))
    wall = time.perf_counter() - t0
    result = {
        "makespan_s": summary["timings"]["jobs_s"],
        "total_s": summary["timings"]["total_s"],
        "wall_s": wall,
        "counts": summary["counts"],
        "pacing": summary["pacing"],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print("BENCH-RESULT " + json.dumps(result), flush=True)


# -- PostgreSQL-backed Prefect server ---------------------------------------------------------


@contextlib.contextmanager
def postgres_prefect(log: Path) -> Any:
    """``prefect server start`` on a database of our own; dropped afterwards."""
    import asyncpg

    from bench.prefect_server import free_port, start_prefect_server

    db = f"matteflow_bench_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    port = free_port()
    env = dict(os.environ)
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    env.pop("PREFECT_API_URL", None)
    with log.open("w") as fh:
        proc = start_prefect_server(port, env, fh, cwd=ROOT)
    api = f"http://127.0.0.1:{port}/api"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited; see {log}")
            time.sleep(0.5)
        else:
            raise RuntimeError(f"prefect server did not start; see {log}")
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(Exception):
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


# -- driver ---------------------------------------------------------------------------------------


@dataclass
class Case:
    client: str  # bare | matteflow
    server: str  # - | sqlite | postgres
    n: int
    k: int
    latency_s: float
    task_runs: str = "auto"
    shared: bool = False  # hold a Prefect global concurrency limit slot per job
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ideal_s(self) -> float:
        return math.ceil(self.n / self.k) * self.latency_s


def run_child(argv: list[str], env: dict[str, str], log: Path, timeout_s: float) -> dict[str, Any]:
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            timeout=timeout_s,
        )
    text = log.read_text(errors="replace")
    found = [line for line in text.splitlines() if line.startswith("BENCH-RESULT ")]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{argv[:2]} failed (exit {proc.returncode}); see {log}")
    result: dict[str, Any] = json.loads(found[-1][len("BENCH-RESULT ") :])
    result["log_errors"] = {m: text.count(m) for m in ERROR_MARKERS if m in text}
    return result


def cpu_now() -> tuple[float, float]:
    """(this process's CPU seconds: the fake's, children's CPU seconds: the clients')."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_case(case: Case, work: Path, clip: Path, api_url: str | None, result_dir: str) -> None:
    fake = make_fake(work / "fake", case.latency_s, case.k)
    try:
        url = fake.serve_file(clip)
        urls = [f"{url}?n={i}" for i in range(case.n)]
        env = dict(os.environ)
        env.update(fake.env())
        env.update(
            MATTEFLOW_FAL_POLL_INITIAL_S=str(POLL_INITIAL_S),
            MATTEFLOW_FAL_POLL_MAX_S=str(POLL_MAX_S),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_LOGGING_LEVEL="WARNING",
            # A fresh PREFECT_HOME migrates its database at start: on a loaded machine that
            # outlasts the default wait. Start-up is outside the makespan either way.
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
        )
        env.pop("PREFECT_API_URL", None)
        if api_url:
            env["PREFECT_API_URL"] = api_url
        # A fresh PREFECT_HOME: the temporary server then migrates its own new SQLite file
        # instead of sharing ~/.prefect/prefect.db with every other Prefect process here.
        home = work / f"prefect-home-{case.server}-{case.n}-{case.shared}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        env["PREFECT_HOME"] = str(home)
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        log = work / "child.log"
        timeout = 600 + 3 * case.ideal_s
        if case.client == "bare":
            (work / "urls.txt").write_text("\n".join(urls))
            argv = [
                "--child",
                "bare",
                "--base",
                fake.base_url,
                "--key",
                fake.key,
                "--urls",
                str(work / "urls.txt"),
                "--k",
                str(case.k),
                "--output",
                str(out),
            ]
        else:
            manifest = work / "manifest.csv"
            with manifest.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["id", "video_url"])
                writer.writerows([i, u] for i, u in enumerate(urls))
            argv = [
                "--child",
                "matteflow",
                "--manifest",
                str(manifest),
                "--output",
                str(out),
                "--k",
                str(case.k),
                "--task-run-mode",
                case.task_runs,
                "--shared-limit",
                f"bench-{os.getpid()}" if case.shared else "",
            ]
        fake_c0, client_c0 = cpu_now()
        result = run_child(argv, env, log, timeout)
        fake_c1, client_c1 = cpu_now()
        result["fake_cpu_s"], result["client_cpu_s"] = fake_c1 - fake_c0, client_c1 - client_c0
        stats = fake.stats()
        result["detect_delay_s"] = stats["detect_delay_s"]
        result["stream_calls"] = sum(v for k, v in stats["calls"].items() if k.startswith("stream"))
        result["peak_in_progress"] = stats["peak_in_progress"]
        result["peak_outstanding"] = fake.peak_outstanding
        result["accepted"] = stats["accepted_total"]
        result["status_calls"] = sum(v for k, v in stats["calls"].items() if k.startswith("status"))
        case.result = result
        keep = work / f"{case.client}-{case.server}-{case.n}-{case.task_runs}-{case.shared}.log"
        shutil.copyfile(log, keep)
        if result["log_errors"]:  # keep the evidence next to the results
            errors = Path(result_dir) / "logs"
            errors.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, errors / keep.name)
    finally:
        fake.stop()
        shutil.rmtree(work / "fake", ignore_errors=True)


def table(cases: list[Case]) -> list[dict[str, Any]]:
    """One row per case; the baseline of a size is the mean of its bare runs (before and after)."""
    bares: dict[tuple[int, int, float], list[float]] = {}
    for c in cases:
        if c.client == "bare" and c.result:
            bares.setdefault((c.n, c.k, c.latency_s), []).append(float(c.result["makespan_s"]))
    rows = []
    for c in cases:
        if not c.result:
            continue
        r = c.result
        runs = bares.get((c.n, c.k, c.latency_s))
        base = sum(runs) / len(runs) if runs else None
        mk = float(r["makespan_s"])
        over_base = (mk - base) * c.k / c.n if base else None
        rows.append(
            {
                "client": c.client,
                "prefect": c.server,
                "task_runs": c.task_runs if c.client == "matteflow" else "-",
                "shared_limit": ("yes" if c.shared else "no") if c.client == "matteflow" else "-",
                "N": c.n,
                "K": c.k,
                "L_s": c.latency_s,
                "ideal_s": round(c.ideal_s, 1),
                "makespan_s": round(mk, 1),
                "x_ideal": round(mk / c.ideal_s, 3),
                "of_ideal": round(c.ideal_s / mk, 3),
                "x_bare": round(mk / base, 3) if base else None,
                "overhead_s_per_job": round(over_base, 3) if over_base is not None else None,
                "total_s": round(float(r.get("total_s", mk)), 1),
                "peak_in_progress": r["peak_in_progress"],
                "peak_outstanding": r["peak_outstanding"],
                "accepted": r["accepted"],
                "rss_mb": round(float(r["rss_mb"]), 0),
                "status_calls": r["status_calls"],
                "streams": r.get("stream_calls", 0),
                "detect_mean_s": (r.get("detect_delay_s") or {}).get("mean"),
                "detect_p95_s": (r.get("detect_delay_s") or {}).get("p95"),
                "cpu_ms_per_job": round(1000 * float(r.get("client_cpu_s", 0)) / c.n, 1),
                "fake_cpu_share": _share(r),
                "errors": sum(r["log_errors"].values()) + int(r.get("errors", 0)),
                "ok": (r.get("counts") or {}).get("succeeded", c.n - int(r.get("errors", 0))),
            }
        )
    return rows


def _share(r: dict[str, Any]) -> float | None:
    fake, client = float(r.get("fake_cpu_s", 0)), float(r.get("client_cpu_s", 0))
    return round(fake / (fake + client), 3) if fake + client else None


def render(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(r[c]).rjust(w) for c, w in zip(cols, widths, strict=True)))
    return "\n".join(out)


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, python "
        f"{platform.python_version()}, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )


def parse_shape(text: str) -> tuple[int, int, float]:
    n, k, latency = text.lower().split("x")
    return int(n), int(k), float(latency)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N: a smoke test")
    parser.add_argument(
        "--cases",
        nargs="*",
        default=["400x20x1", "2000x40x2"],
        help="NxKxL: N jobs of L seconds at K in flight (default: issue 16's two shapes)",
    )
    parser.add_argument("--n", type=int, nargs="*", help="catalog sizes, with --k and --latency")
    parser.add_argument("--k", type=int, default=40, help="account concurrency (with --n)")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per job (with --n)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL server")
    parser.add_argument(
        "--shared", action="store_true", help="also hold a Prefect global concurrency slot per job"
    )
    parser.add_argument(
        "--task-runs", action="store_true", help="also run N=max with a task run per job"
    )
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--child", choices=["bare", "matteflow"], help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--task-run-mode", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--shared-limit", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (child_bare if args.child == "bare" else child_matteflow)(args)
        return 0

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if args.quick:
        shapes = [(n, min(args.k, 8), min(args.latency, 0.5)) for n in args.n or [40]]
    elif args.n:
        shapes = [(n, args.k, args.latency) for n in args.n]
    else:
        shapes = [parse_shape(text) for text in args.cases]
    cases: list[Case] = []
    big = max(n for n, _, _ in shapes)
    for n, k, latency in shapes:  # bare before and after matteflow: the machine's load drifts
        cases += [Case("bare", "-", n, k, latency), Case("matteflow", "sqlite", n, k, latency)]
        if n == big:
            if args.shared:
                cases.append(Case("matteflow", "sqlite", n, k, latency, shared=True))
            if not args.quick and not args.no_postgres:
                cases.append(Case("matteflow", "postgres", n, k, latency))
                if args.shared:
                    cases.append(Case("matteflow", "postgres", n, k, latency, shared=True))
            if args.task_runs:
                cases.append(Case("matteflow", "sqlite", n, k, latency, task_runs="on"))
        cases.append(Case("bare", "-", n, k, latency))

    started = datetime.now(UTC)
    from tasks.media.samples import make_person_clip

    with tempfile.TemporaryDirectory(prefix="matteflow-bench-") as tmp:
        work = Path(tmp)
        clip = make_person_clip(work / "clip.mp4", width=64, height=48, seconds=0.4, fps=20)
        for case in cases:
            print(
                f"-- {case.client} {case.server} N={case.n} K={case.k} L={case.latency_s}"
                f" task_runs={case.task_runs} shared={case.shared}",
                flush=True,
            )
            try:
                if case.server == "postgres":
                    with postgres_prefect(work / "prefect-server.log") as api:
                        run_case(case, work, clip, api, args.results)
                else:
                    run_case(case, work, clip, None, args.results)
            except Exception as exc:  # one failed case must not hide the others' numbers
                print(f"   failed: {exc}", flush=True)
                logs = sorted(work.glob("*.log"))
                for log in logs[-1:]:
                    print(log.read_text(errors="replace")[-3000:])
                continue
            print(f"   {json.dumps(case.result)}", flush=True)
        rows = table(cases)
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        name = f"pacing-{'quick-' if args.quick else ''}{stamp}"
        if not rows:
            print("no case finished")
            return 1
        text = render(rows)
        header = (
            f"matteflow pacing benchmark, {started.isoformat(timespec='seconds')}\n"
            f"machine: {machine()}\n"
            f"poll schedule (both clients): {POLL_INITIAL_S} s x{POLL_FACTOR} up to {POLL_MAX_S} s"
            " (matteflow: on the status stream's failure only)\n"
            "of_ideal = ceil(N/K)*L / makespan; fake_cpu_share = the fake server's share of the "
            "case's CPU (fake + client processes)\n"
            "makespan: first job start to last row; bare = mean of the bare runs of that N;\n"
            "overhead_s_per_job = (makespan - bare) * K / N (slot-seconds each job costs more)\n"
            "shared, noisy machine: compare ratios, not seconds\n"
        )
        print("\n" + header + "\n" + text)
        (results / f"{name}.txt").write_text(header + "\n" + text + "\n")
        (results / f"{name}.json").write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "started": started.isoformat(),
                    "rows": rows,
                    "raw": [c.result for c in cases],
                },
                indent=2,
            )
        )
        print(f"\nwritten: {results / name}.txt")
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda a: None  # fake server threads cut off at shutdown
    sys.exit(main())
