"""The budget guard's arithmetic: spent + in flight + this job must fit."""

from __future__ import annotations

from tasks.budget import BudgetGuard


def test_no_budget_admits_everything() -> None:
    guard = BudgetGuard(None)
    assert guard.reserve(1e9) is None
    assert guard.left_usd is None


def test_in_flight_estimates_count_until_settled() -> None:
    guard = BudgetGuard(1.0)
    assert guard.reserve(0.4) is None
    assert guard.reserve(0.4) is None
    reason = guard.reserve(0.4)  # 0.8 reserved + 0.4 > 1.0
    assert reason is not None and "in flight $0.8000" in reason
    assert guard.refused == 1
    guard.settle(0.4, 0.1)  # came in cheaper than estimated: room again
    assert guard.reserve(0.4) is None
    assert round(guard.spent_usd, 6) == 0.1
    assert round(guard.reserved_usd, 6) == 0.8


def test_exact_fit_is_admitted() -> None:
    guard = BudgetGuard(0.3)
    assert guard.reserve(0.1) is None
    assert guard.reserve(0.2) is None
    assert guard.reserve(0.000001) is not None
    guard.settle(0.1, 0.1)
    guard.settle(0.2, 0.2)
    assert guard.left_usd is not None and abs(guard.left_usd) < 1e-9
