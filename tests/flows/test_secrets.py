"""Secrets for deployed runs: block names in the environment, values from Secret blocks."""

from __future__ import annotations

import pytest

from flows.secrets import (
    BLOCKS_ENV,
    format_block_map,
    load_secret_env,
    parse_block_map,
    save_secret_blocks,
)


def test_block_map_round_trip_and_rejects_unknown_variables() -> None:
    blocks = {"FAL_KEY": "fal", "AWS_SECRET_ACCESS_KEY": "s3"}
    assert parse_block_map(format_block_map(blocks)) == blocks
    assert parse_block_map(" FAL_KEY = fal , ") == {"FAL_KEY": "fal"}
    for bad in ("PATH=x", "FAL_KEY", "FAL_KEY="):
        with pytest.raises(ValueError, match=BLOCKS_ENV):
            parse_block_map(bad)


@pytest.mark.usefixtures("prefect_server")
async def test_env_wins_then_blocks_fill_then_missing_is_reported() -> None:
    saved = await save_secret_blocks(
        {"FAL_KEY": "t-secrets-fal", "AWS_SECRET_ACCESS_KEY": "t-secrets-s3"},
        {"FAL_KEY": "from-block"},  # no AWS secret in this shell: that block is not written
    )
    assert saved == ["t-secrets-fal"]
    env = {
        BLOCKS_ENV: "FAL_KEY=t-secrets-fal,AWS_SECRET_ACCESS_KEY=t-secrets-none",
        "AWS_ACCESS_KEY_ID": "kept",
    }
    filled, missing = await load_secret_env(env)
    assert (filled, missing) == (["FAL_KEY"], ["t-secrets-none"])
    assert env["FAL_KEY"] == "from-block" and "AWS_SECRET_ACCESS_KEY" not in env

    env = {BLOCKS_ENV: "FAL_KEY=t-secrets-fal", "FAL_KEY": "worker-own"}
    assert await load_secret_env(env) == ([], [])
    assert env["FAL_KEY"] == "worker-own"
