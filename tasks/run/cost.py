"""Pricing model: estimates before a job, actual cost after it, from configs/pricing.yaml."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

PRICING_FILE = Path(__file__).resolve().parents[2] / "configs" / "pricing.yaml"


class Price(BaseModel):
    unit: str = Field(description="free | per_30_frames | per_compute_second | per_megapixel")
    price_usd: float = Field(ge=0)
    source: str = ""
    checked: str = ""
    verified: bool = True
    estimate_fps: float | None = Field(
        None,
        gt=0,
        description="per_compute_second: frames processed per compute second, for estimates.",
    )

    def compute_seconds(self, frames: int) -> float:
        """Compute time an estimate assumes for ``frames`` (per-compute-second prices)."""
        return frames / self.estimate_fps if self.estimate_fps else 0.0


@cache
def load_pricing(path: Path = PRICING_FILE) -> dict[str, Price]:
    raw: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return {name: Price.model_validate(entry) for name, entry in raw.items()}


def price_for(endpoint: str, pricing: dict[str, Price] | None = None) -> Price:
    table = pricing if pricing is not None else load_pricing()
    if endpoint not in table:
        raise KeyError(f"no price for endpoint {endpoint!r} in {PRICING_FILE.name}")
    return table[endpoint]


def cost_usd(
    price: Price, *, frames: int = 0, compute_s: float = 0.0, megapixels: float = 0.0
) -> float:
    """Cost of one job in USD, from the quantity the price is per."""
    if price.unit == "free":
        return 0.0
    if price.unit == "per_30_frames":
        return round(math.ceil(frames / 30) * price.price_usd, 6)
    if price.unit == "per_compute_second":
        return round(compute_s * price.price_usd, 6)
    if price.unit == "per_megapixel":
        return round(megapixels * price.price_usd, 6)
    raise ValueError(f"unknown price unit {price.unit!r}")
