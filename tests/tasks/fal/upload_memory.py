"""Upload one file to a fake fal and print the peak RSS (KiB): run as a subprocess by the tests.

usage: python -m tests.fakes... upload_memory.py BASE_URL KEY PATH [MULTIPART_THRESHOLD_BYTES]
"""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

from pydantic import SecretStr

from tasks.fal.client import FalSettings, build_client
from tasks.fal.uploads import upload_file


async def main(base: str, key: str, path: Path, threshold: int) -> str:
    settings = FalSettings.model_validate(
        {
            "key": SecretStr(key),
            "queue_url": base,
            "rest_url": base,
            "multipart_threshold_bytes": threshold,
        }
    )
    client = build_client(settings)
    try:
        return await upload_file(client, path)
    finally:
        await client.aclose()


if __name__ == "__main__":
    base, key, name = sys.argv[1:4]
    threshold = int(sys.argv[4]) if len(sys.argv) > 4 else 100 * 1024**2
    url = asyncio.run(main(base, key, Path(name), threshold))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{peak_kib} {url}")
