"""The budget guard: a job is submitted only if spent + in flight + its own estimate fit.

Jobs already in flight are never cut off; a job that does not fit ends ``skipped_budget``.
All calls happen on one event loop with no ``await`` between check and reservation, so two
jobs cannot both take the last dollar.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BudgetGuard:
    """Running account of one run's spend against ``budget_usd`` (``None``: no limit)."""

    budget_usd: float | None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    refused: int = 0

    def refusal(self, estimate_usd: float) -> str | None:
        """Why a job of ``estimate_usd`` cannot start now, or ``None`` when it fits."""
        if self.budget_usd is None:
            return None
        total = self.spent_usd + self.reserved_usd + estimate_usd
        if total <= self.budget_usd + 1e-9:
            return None
        return (
            f"budget ${self.budget_usd:.4f} would be exceeded: spent ${self.spent_usd:.4f}"
            f" + in flight ${self.reserved_usd:.4f} + this job's estimate ${estimate_usd:.4f}"
        )

    def reserve(self, estimate_usd: float) -> str | None:
        """Reserve ``estimate_usd`` for a job about to start; return the refusal if it does not fit."""
        reason = self.refusal(estimate_usd)
        if reason is None:
            self.reserved_usd += estimate_usd
        else:
            self.refused += 1
        return reason

    def settle(self, estimate_usd: float, actual_usd: float) -> None:
        """A reserved job ended: its estimate leaves the reservations, its real cost is spent."""
        self.reserved_usd = max(0.0, self.reserved_usd - estimate_usd)
        self.spent_usd += actual_usd

    @property
    def left_usd(self) -> float | None:
        return None if self.budget_usd is None else self.budget_usd - self.spent_usd
