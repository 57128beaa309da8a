"""The general model's weights: found where ``make models`` puts them, and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.endpoints.local import LocalModel, LocalOptions
from tasks.engine.general import U2NETP_FILE, models_dir, u2netp_bytes
from tasks.engine.segment import MissingExtra, ModelError


def test_missing_weights_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(MissingExtra, match="make models"):
        u2netp_bytes(tmp_path / U2NETP_FILE)


def test_weights_with_another_checksum_are_refused(tmp_path: Path) -> None:
    fake = tmp_path / U2NETP_FILE
    fake.write_bytes(b"not u2netp")
    with pytest.raises(ModelError, match="sha256"):
        u2netp_bytes(fake)


def test_models_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MATTEFLOW_MODELS", str(tmp_path))
    assert models_dir() == tmp_path


def test_general_is_a_local_model_option() -> None:
    assert LocalOptions.model_validate({"model": "general"}).model is LocalModel.general
