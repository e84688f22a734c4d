"""`aintandem up`'s restart policy for a child that dies (cli/up.py RestartBudget)."""

from __future__ import annotations

from cli.up import RestartBudget


def test_backoff_grows_then_the_budget_runs_out_and_refills_after_the_window() -> None:
    budget = RestartBudget(max_restarts=5, window=300.0)
    assert [budget.next_delay("worker", t) for t in (0, 1, 2, 3, 4)] == [1, 2, 4, 8, 16]
    assert budget.next_delay("worker", 5) is None  # a sixth death within 5 minutes: a real fault
    assert budget.next_delay("api", 5) == 1  # each child has its own budget
    assert budget.next_delay("api", 400) == 1  # its one restart aged out: back to 1 s
    assert budget.next_delay("worker", 302) == 4  # three of the five aged out of the window


def test_delay_is_capped() -> None:
    budget = RestartBudget(max_restarts=10, window=1000.0)
    delays = [budget.next_delay("temporal", float(t)) for t in range(10)]
    assert max(d for d in delays if d is not None) == 30.0
