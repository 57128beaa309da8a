"""A real Prefect server and process workers as subprocesses, on loopback, for deployment tests.

Not a fake: ``prefect server start`` (on PostgreSQL or SQLite) and ``prefect worker start``, each
in its own process group so that ``stop()`` also ends the flow-run processes a worker started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.seaweed import free_port

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


async def _pg(sql: str, timeout: float = 5.0) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=timeout
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_available() -> bool:
    try:
        asyncio.run(_pg("SELECT 1", timeout=3.0))
    except (TimeoutError, OSError, ImportError) as exc:
        print(f"PostgreSQL not available: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    except Exception as exc:  # asyncpg's own errors (auth, missing role)
        print(f"PostgreSQL not usable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    return True


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A database of our own on the local PostgreSQL, dropped afterwards even if in use."""
    name = f"matteflow_it_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class PrefectStack:
    """``prefect server start`` plus named process workers; every process is stopped at the end."""

    workdir: Path
    repo: Path
    database_url: str | None = None
    ui: bool = False
    port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.workdir / "prefect-home"),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_LOGGING_LEVEL="INFO",
            PYTHONPATH=str(self.repo),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log(name).open("wb") as out:
            proc = subprocess.Popen(
                args,
                cwd=self.repo,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def prefect(self) -> str:
        return str(Path(sys.executable).parent / "prefect")

    def start_server(self, timeout: float = 180.0) -> None:
        self.port = self.port or free_port()
        # The UI's browser code calls this URL; its default assumes port 4200.
        extra = {
            "PREFECT_UI_ENABLED": "true" if self.ui else "false",
            "PREFECT_UI_API_URL": self.api_url,
        }
        if self.database_url:
            extra["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        env = self.env(**extra)
        env.pop("PREFECT_API_URL")
        proc = self._spawn(
            "server",
            [self.prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{self.tail('server')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {timeout} s:\n{self.tail('server')}")

    def start_worker(self, name: str, pool: str, limit: int, **env: str) -> None:
        worker_env = self.env(PREFECT_WORKER_QUERY_SECONDS="1")
        # Secrets reach a worker only as the test says (its env or Secret blocks), never
        # inherited from the test session (which runs with canary values of them).
        for var in ("FAL_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            worker_env.pop(var, None)
        worker_env.update(env)
        args = [self.prefect(), "worker", "start", "--pool", pool, "--type", "process"]
        self._spawn(name, [*args, "--name", name, "--limit", str(limit)], worker_env)

    def wait_for_workers(self, pool: str, names: set[str], timeout: float = 90.0) -> None:
        """Until every named worker has sent a heartbeat to the pool."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            for name in names:
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited:\n{self.tail(name)}")
            r = httpx.post(f"{self.api_url}/work_pools/{pool}/workers/filter", json={}, timeout=5)
            if r.status_code == 200:
                seen = {w["name"] for w in r.json()}
                if names <= seen:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"workers {names - seen} did not report to pool {pool}")

    def tail(self, name: str, chars: int = 4000) -> str:
        path = self.log(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM each process group, then SIGKILL what is left; never raises."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def __enter__(self) -> PrefectStack:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_final(client: Any, flow_run_id: Any, timeout: float) -> Any:
    """Poll a flow run (sync client) until its state is final; TimeoutError past ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1.0)
    raise TimeoutError(f"flow run {flow_run_id} did not finish in {timeout} s")
