"""Uploads as the current fal_client does them: CDN v3 token, single or multipart, streamed.

fal_client (``projects/fal_client/src/fal_client/client.py``): token from
``storage/auth/token?storage_type=fal-cdn-v3``; ``POST /files/upload``; above 100 MB
``/files/upload/multipart`` in 10 MB parts, each part's ETag sent to ``…/complete``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tasks.errors import AuthError, EndpointError
from tasks.fal.client import FalClient, FalSettings, build_client
from tasks.fal.uploads import part_count, upload_file
from tasks.retry import Backoff
from tests.fakes.fal_server import FakeFal, Faults

MB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[3]


def client_for(fake: FakeFal, **kw: Any) -> FalClient:
    values = {"key": SecretStr(fake.key), "queue_url": fake.base_url, "rest_url": fake.base_url}
    return build_client(
        FalSettings.model_validate({**values, **kw}),
        retry=Backoff(attempts=10, base_delay_s=0.01, max_delay_s=0.05),
    )


def blob(path: Path, size: int) -> Path:
    """A file of ``size`` pseudo-random bytes (written a MiB at a time)."""
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, MB)
            fh.write(os.urandom(n))
            left -= n
    return path


def test_part_count() -> None:
    assert part_count(1, 10 * MB) == 1
    assert part_count(10 * MB, 10 * MB) == 1
    assert part_count(10 * MB + 1, 10 * MB) == 2
    assert part_count(1024 * MB, 10 * MB) == 103


async def test_single_upload_round_trips_with_a_cached_token(
    fake_fal: FakeFal, tmp_path: Path
) -> None:
    src = blob(tmp_path / "in.mp4", 3 * MB + 17)
    fake_fal.faults = Faults(rate=0.3, kinds=("503", "500", "drop"), calls=("upload",), seed=2)
    client = client_for(fake_fal)
    urls = [await upload_file(client, src) for _ in range(2)]
    for url in urls:
        assert httpx.get(url).content == src.read_bytes()
    assert fake_fal.calls[("upload", 200)] >= 3  # one token, two uploads
    singles = [size for kind, size in fake_fal.uploads_seen if kind == "single"]
    assert len(singles) >= 2 and set(singles) == {3 * MB + 17}
    await client.aclose()


async def test_multipart_above_the_threshold_in_parts(fake_fal: FakeFal, tmp_path: Path) -> None:
    src = blob(tmp_path / "big.mov", 12 * MB + 5)
    client = client_for(fake_fal, multipart_threshold_bytes=4 * MB, part_bytes=5 * MB)
    fake_fal.faults = Faults(rate=0.25, kinds=("500", "drop"), calls=("upload",), seed=4)
    url = await upload_file(client, src)
    assert httpx.get(url).content == src.read_bytes()
    parts = [size for kind, size in fake_fal.uploads_seen if kind == "part"]
    assert sorted(parts) == [2 * MB + 5, 5 * MB, 5 * MB] or len(parts) > 3  # retried parts
    assert ("complete", 12 * MB + 5) in fake_fal.uploads_seen
    assert not any(kind == "single" for kind, _ in fake_fal.uploads_seen)
    await client.aclose()


async def test_size_limit_refuses_before_sending(fake_fal: FakeFal, tmp_path: Path) -> None:
    src = blob(tmp_path / "huge.mp4", 2 * MB)
    client = client_for(fake_fal, upload_max_bytes=MB)
    with pytest.raises(EndpointError) as info:
        await upload_file(client, src)
    assert info.value.code == "upload_too_large"
    assert "huge.mp4" in str(info.value) and "MATTEFLOW_FAL_UPLOAD_MAX_BYTES" in str(info.value)
    assert not fake_fal.calls  # nothing was sent
    await client.aclose()


async def test_storage_413_is_too_large_with_fals_message(
    fake_fal: FakeFal, tmp_path: Path
) -> None:
    fake_fal.upload_limit_bytes = MB
    src = blob(tmp_path / "a.mp4", 2 * MB)
    client = client_for(fake_fal)
    with pytest.raises(EndpointError) as info:
        await upload_file(client, src)
    assert info.value.code == "upload_too_large" and "File too large" in str(info.value)
    assert fake_fal.calls[("upload", 413)] == 1  # not retried
    await client.aclose()


async def test_locked_account_on_the_token_stops_the_run(fake_fal: FakeFal, tmp_path: Path) -> None:
    fake_fal.locked = "User is locked. Reason: Exhausted balance."
    client = client_for(fake_fal)
    with pytest.raises(AuthError, match="User is locked"):
        await upload_file(client, blob(tmp_path / "a.mp4", 1000))
    await client.aclose()


def peak_kib(fake: FakeFal, path: Path, threshold: int) -> int:
    """Peak RSS of a fresh interpreter that uploads ``path`` (ru_maxrss, KiB on Linux)."""
    cmd = [sys.executable, str(ROOT / "tests/tasks/fal/upload_memory.py")]
    cmd += [fake.base_url, fake.key, str(path), str(threshold)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    return int(out.stdout.split()[0])


@pytest.mark.parametrize("multipart", [False, True], ids=["single", "multipart"])
def test_upload_memory_does_not_grow_with_the_file(
    fake_fal: FakeFal, tmp_path: Path, multipart: bool
) -> None:
    """A file four times larger costs no more memory: the body streams from the file (the
    1 GB measurement is in the README; this keeps the files small)."""
    small = blob(tmp_path / "small.bin", 24 * MB)
    large = blob(tmp_path / "large.bin", 96 * MB)
    threshold = 8 * MB if multipart else 200 * MB
    first = peak_kib(fake_fal, small, threshold)
    second = peak_kib(fake_fal, large, threshold)
    assert second - first < 16 * 1024, (first, second)  # 72 MB more file, < 16 MB more memory
    kinds = {kind for kind, _ in fake_fal.uploads_seen}
    assert kinds == ({"part", "complete"} if multipart else {"single"})
