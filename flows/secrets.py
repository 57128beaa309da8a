"""Secrets for deployed runs: the worker's environment first, else a Prefect Secret block.

A deployment carries block *names*, never values, in ``MATTEFLOW_SECRET_BLOCKS``
(``FAL_KEY=fal-key,AWS_SECRET_ACCESS_KEY=s3-secret``; ``make deploy`` sets it from
configs/deployment.yaml). Values are put in this process's environment, where the fal client and
s3fs read them, so they never pass through flow parameters, the UI, logs or results.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

BLOCKS_ENV = "MATTEFLOW_SECRET_BLOCKS"
SECRET_VARS = frozenset(
    {"FAL_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
)


def parse_block_map(text: str) -> dict[str, str]:
    """``VAR=block,VAR=block`` -> {VAR: block}; only known secret variables are accepted."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        var, sep, block = part.partition("=")
        var, block = var.strip(), block.strip()
        if not sep or not block or var not in SECRET_VARS:
            raise ValueError(
                f"{BLOCKS_ENV}: {part!r} is not VAR=block with VAR one of {sorted(SECRET_VARS)}"
            )
        out[var] = block
    return out


def format_block_map(blocks: dict[str, str]) -> str:
    return ",".join(f"{var}={block}" for var, block in sorted(blocks.items()))


async def load_secret_env(
    environ: MutableMapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """Fill unset secret variables from their Secret blocks: (names filled, blocks missing).

    A missing block is not an error here: a local-engine run needs no FAL_KEY, and the client
    that needs a secret raises ``AuthError`` when it is absent.
    """
    from prefect.blocks.system import Secret

    env = os.environ if environ is None else environ
    filled, missing = [], []
    for var, block in parse_block_map(env.get(BLOCKS_ENV, "")).items():
        if env.get(var):
            continue  # the worker's own environment wins
        try:
            secret: Secret[str] = await Secret.aload(block)
        except ValueError:  # Prefect's "block not found"
            missing.append(block)
            continue
        env[var] = str(secret.get())
        filled.append(var)
    return filled, missing


async def save_secret_blocks(
    blocks: dict[str, str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Store each named variable of ``environ`` that is set in its Secret block; return blocks."""
    from prefect.blocks.system import Secret

    env = os.environ if environ is None else environ
    saved = []
    for var, block in sorted(blocks.items()):
        if value := env.get(var):
            await Secret(value=value).asave(block, overwrite=True)
            saved.append(block)
    return saved
