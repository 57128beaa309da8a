"""The budget guard: a job is submitted only if spent + in flight + its own estimate fit.

Jobs already in flight are never cut off; a job that does not fit ends ``skipped_budget``.
All calls happen on one event loop with no ``await`` between check and reservation, so two
jobs cannot both take the last dollar.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BudgetGuard:
    """Running account of one run's spend against ``budget_usd`` (``None``: no limit)."""

    budget_usd: float | None
    spent_usd: float = 0.0
    refused: int = 0
    reserved: dict[str, float] = field(default_factory=dict)  # job key -> its estimate

    @property
    def reserved_usd(self) -> float:
        return sum(self.reserved.values())

    def refusal(self, estimate_usd: float) -> str | None:
        """Why a job of ``estimate_usd`` cannot start now, or ``None`` when it fits."""
        if self.budget_usd is None:
            return None
        in_flight = self.reserved_usd
        if self.spent_usd + in_flight + estimate_usd <= self.budget_usd + 1e-9:
            return None
        return (
            f"budget ${self.budget_usd:.4f} would be exceeded: spent ${self.spent_usd:.4f}"
            f" + in flight ${in_flight:.4f} + this job's estimate ${estimate_usd:.4f}"
        )

    def reserve(self, key: str, estimate_usd: float) -> str | None:
        """Reserve ``estimate_usd`` for job ``key`` about to be submitted; else the refusal."""
        reason = self.refusal(estimate_usd)
        if reason is None:
            self.reserved[key] = self.reserved.get(key, 0.0) + estimate_usd
        else:
            self.refused += 1
        return reason

    def settle(self, key: str, actual_usd: float) -> None:
        """Job ``key`` ended: its reservation is dropped and its real cost is spent."""
        self.reserved.pop(key, None)
        self.spent_usd += actual_usd

    @property
    def left_usd(self) -> float | None:
        return None if self.budget_usd is None else self.budget_usd - self.spent_usd
