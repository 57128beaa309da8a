"""Peak memory of uploading one large local file to the fake fal (issue 13's measurement).

usage: PYTHONPATH=$PWD .venv/bin/python scripts/upload_memory.py BYTES [MULTIPART_THRESHOLD]

Writes a file of BYTES bytes, starts the fake fal server on loopback, uploads the file from a
child process (tests/tasks/fal/upload_memory.py, which prints its ru_maxrss) and prints the
child's peak RSS, the time taken and the upload calls the fake saw.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.fakes.fal_server import FakeFal

MIB = 1 << 20


def main(size: int, threshold: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.mp4"
        block = os.urandom(MIB)
        with src.open("wb") as fh:
            for _ in range(size // MIB):
                fh.write(block)
            fh.write(block[: size % MIB])
        with FakeFal(Path(tmp) / "fake") as fake:
            cmd = [sys.executable, "tests/tasks/fal/upload_memory.py", fake.base_url, fake.key]
            cmd += [str(src), *([threshold] if threshold else [])]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            calls = Counter(kind for kind, _ in fake.uploads_seen)
            peak = int(out.stdout.split()[0]) / 1024
            print(
                f"{size} bytes: peak RSS {peak:.1f} MiB, {time.perf_counter() - t0:.1f} s, {dict(calls)}"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
