"""Does a slot held by a killed worker come back? A check on a real ``prefect server start``.

Starts a Prefect server (SQLite in a fresh PREFECT_HOME, repossessor every LOOP seconds),
creates a global concurrency limit, lets a child process take a slot with a 60 s lease, kills
the child with SIGKILL, and reports how long the server takes to free the slot.

    python bench/lease_check.py [LOOP_SECONDS]     # ~2 minutes; measured: 68 s and 76 s, LOOP=15
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOLDER = """
import asyncio
from prefect.concurrency.asyncio import concurrency
async def main():
    async with concurrency("lease-check", lease_duration=60, strict=True):
        print("held", flush=True)
        await asyncio.sleep(1000)
asyncio.run(main())
"""


def main() -> int:
    from bench.prefect_server import free_port, start_prefect_server

    loop_s = sys.argv[1] if len(sys.argv) > 1 else "15"
    home = tempfile.mkdtemp(prefix="lease-check-")
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update(PREFECT_UI_ENABLED="false", PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS=loop_s)
    env.pop("PREFECT_API_URL", None)
    with open(f"{home}/server.log", "w") as log:
        server = start_prefect_server(port, env, log)
    api = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        env["PREFECT_API_URL"] = os.environ["PREFECT_API_URL"] = api
        from flows.concurrency import ensure_shared_limit_sync

        ensure_shared_limit_sync("lease-check", 2)

        def active() -> int:
            return int(httpx.get(f"{api}/v2/concurrency_limits/lease-check").json()["active_slots"])

        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        print(f"active slots while held: {active()}", flush=True)
        holder.kill()
        holder.wait()
        t0 = time.monotonic()
        print("holder killed with SIGKILL", flush=True)
        while time.monotonic() - t0 < 240:
            if active() == 0:
                print(
                    f"slot returned after {time.monotonic() - t0:.0f} s (repossessor loop {loop_s} s)"
                )
                return 0
            time.sleep(3)
        print("slot NOT returned after 240 s")
        return 1
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
