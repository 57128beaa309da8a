from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import InputError, StorageError
from tasks.retry import Backoff
from tasks.storage.store import Storage, local_input, redact_url
from tests.fakes.refusing_s3 import refusing_s3
from tests.fakes.seaweed import SeaweedS3


def test_local_writes_leave_no_partial_files(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "out"))
    src = tmp_path / "v.bin"
    src.write_bytes(b"x" * 1000)
    storage.put_file(src, "videos/a.bin")
    storage.write_json("jobs/k.json", {"a": 1})
    assert storage.size("videos/a.bin") == 1000
    assert storage.read_json("jobs/k.json") == {"a": 1}
    assert not list((tmp_path / "out").rglob("*.part-*"))


def test_file_url_and_plain_path_are_the_same_place(tmp_path: Path) -> None:
    Storage(f"file://{tmp_path}/o").write_json("a.json", [1])
    assert Storage(str(tmp_path / "o")).read_json("a.json") == [1]


def test_redact_url_drops_signatures_and_credentials() -> None:
    url = "https://user:pw@bucket.s3.amazonaws.com/a.mp4?X-Amz-Signature=abc&X-Amz-Credential=k"
    assert redact_url(url) == "https://bucket.s3.amazonaws.com/a.mp4"


def test_missing_local_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info, local_input(str(tmp_path / "nope.mp4"), tmp_path):
        pass
    assert info.value.code == "input_not_found"


@pytest.mark.integration
def test_s3_round_trip_on_a_real_server(seaweed: SeaweedS3, s3_bucket: str, tmp_path: Path) -> None:
    storage = Storage(f"{s3_bucket}/prefix", seaweed.storage_options())
    src = tmp_path / "v.bin"
    src.write_bytes(b"y" * 3_000_000)
    storage.put_file(src, "videos/a.bin")
    storage.write_json("jobs/k.json", {"state": "succeeded"})
    assert storage.size("videos/a.bin") == 3_000_000
    assert storage.read_json("jobs/k.json") == {"state": "succeeded"}
    assert storage.url("videos/a.bin") == f"{s3_bucket}/prefix/videos/a.bin"
    with local_input(storage.url("videos/a.bin"), tmp_path, seaweed.storage_options()) as got:
        assert got.read_bytes() == src.read_bytes()


def test_one_retry_layer_per_storage_call() -> None:
    """Ours is the only loop: two attempts send two requests, not two times s3fs's five."""
    with refusing_s3() as s3:
        storage = Storage(
            "s3://bucket/p",
            s3.storage_options,
            retry=Backoff(attempts=2, base_delay_s=0.01, max_delay_s=0.01),
        )
        with pytest.raises(StorageError) as info:
            storage.write_bytes("jobs/k.json", b"{}")
    assert info.value.code == "storage_unavailable" and "after 2 attempts" in info.value.message
    assert s3.requests == ["PUT /bucket/p/jobs/k.json"] * 2
