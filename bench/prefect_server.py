"""A throwaway Prefect server on a loopback port, as the benchmarks start it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_prefect_server(
    port: int, env: dict[str, str], log: IO[str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """``prefect server start`` on 127.0.0.1:PORT, its output into ``log``."""
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    return subprocess.Popen(
        [*cmd, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd
    )
