"""The budget guard's arithmetic: spent + in flight + this job must fit."""

from __future__ import annotations

from tasks.run.budget import BudgetGuard


def test_no_budget_admits_everything() -> None:
    guard = BudgetGuard(None)
    assert guard.reserve("a", 1e9) is None
    assert guard.left_usd is None


def test_in_flight_estimates_count_until_settled() -> None:
    guard = BudgetGuard(1.0)
    assert guard.reserve("a", 0.4) is None
    assert guard.reserve("b", 0.4) is None
    reason = guard.reserve("c", 0.4)  # 0.8 reserved + 0.4 > 1.0
    assert reason is not None and "in flight $0.8000" in reason
    assert guard.refused == 1 and "c" not in guard.reserved
    guard.settle("a", 0.1)  # came in cheaper than estimated: room again
    assert guard.reserve("c", 0.4) is None
    assert round(guard.spent_usd, 6) == 0.1
    assert round(guard.reserved_usd, 6) == 0.8


def test_exact_fit_is_admitted_and_unreserved_jobs_still_count() -> None:
    guard = BudgetGuard(0.3)
    assert guard.reserve("a", 0.1) is None
    assert guard.reserve("b", 0.2) is None
    assert guard.reserve("c", 0.000001) is not None
    guard.settle("a", 0.1)
    guard.settle("b", 0.2)
    guard.settle("resumed", 0.05)  # a job resumed from an earlier run was never reserved
    assert guard.left_usd is not None and round(guard.left_usd, 6) == -0.05
