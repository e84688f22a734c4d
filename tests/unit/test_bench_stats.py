"""The benchmark harness's pure helpers: percentiles, ratios, verdicts, table rendering."""

from __future__ import annotations

import pytest

from bench import stats
from bench.core import Result
from bench.temporal_history import ActivitySpan, WorkflowTimeline, breakdown, workflow_task_stats


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert stats.percentile(values, 0) == 15.0
    assert stats.percentile(values, 100) == 50.0
    assert stats.percentile(values, 50) == 35.0
    # rank (5-1)*0.4 = 1.6 -> 20 + 0.6 * (35 - 20)
    assert stats.percentile(values, 40) == pytest.approx(29.0)
    # rank 3.8 -> 40 + 0.8 * 10
    assert stats.percentile(values, 95) == pytest.approx(48.0)


def test_percentile_ignores_input_order_and_handles_one_value() -> None:
    assert stats.percentile([3, 1, 2], 50) == 2
    assert stats.percentile([7.5], 95) == 7.5


@pytest.mark.parametrize("p", [-1, 100.5])
def test_percentile_rejects_bad_p(p: float) -> None:
    with pytest.raises(ValueError):
        stats.percentile([1.0], p)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)


def test_summarize() -> None:
    s = stats.summarize([4.0, 1.0, 3.0, 2.0])
    assert s["n"] == 4
    assert s["min"] == 1.0 and s["max"] == 4.0
    assert s["p50"] == pytest.approx(2.5)
    assert s["mean"] == pytest.approx(2.5)
    assert stats.summarize([]) == {"n": 0}


def test_ratio() -> None:
    assert stats.ratio(150.0, 100.0) == pytest.approx(1.5)
    assert stats.ratio(None, 100.0) is None
    assert stats.ratio(100.0, None) is None
    assert stats.ratio(100.0, 0.0) is None


def test_verdict_lower_is_better() -> None:
    assert stats.verdict(150.0, 100.0, 1.5) == stats.PASS  # exactly at the goal passes
    assert stats.verdict(151.0, 100.0, 1.5) == stats.FAIL
    assert stats.verdict(90.0, 100.0, 1.5) == stats.PASS


def test_verdict_higher_is_better() -> None:
    assert stats.verdict(80.0, 100.0, 0.8, higher_is_better=True) == stats.PASS
    assert stats.verdict(70.0, 100.0, 0.8, higher_is_better=True) == stats.FAIL


def test_verdict_without_goal_or_numbers() -> None:
    assert stats.verdict(1.0, 1.0, None) == stats.INFO
    assert stats.verdict(None, 1.0, 1.5) == stats.NO_DATA
    assert stats.verdict(1.0, None, 1.5) == stats.NO_DATA


def test_formatting() -> None:
    assert stats.fmt_number(None) == "-"
    assert stats.fmt_number(float("nan")) == "-"
    assert stats.fmt_number(12.345) == "12.3"
    assert stats.fmt_number(12345.6) == "12,346"
    assert stats.fmt_ratio(1.234) == "1.23x"
    assert stats.fmt_ratio(None) == "-"
    assert stats.fmt_goal(1.5) == "<= 1.5x"
    assert stats.fmt_goal(0.8, higher_is_better=True) == ">= 0.8x"
    assert stats.fmt_goal(None) == "-"


def test_render_table_pads_and_aligns() -> None:
    out = stats.render_table(
        ("name", "value"), [("a", "1.0"), ("longer", "10.5")], align_right=(False, True)
    )
    lines = out.splitlines()
    assert lines[0] == "name    value"
    assert lines[1] == "------  -----"
    assert lines[2] == "a         1.0"
    assert lines[3] == "longer   10.5"


def test_render_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError):
        stats.render_table(("a", "b"), [("only one",)])


def test_result_ratio_verdict_and_json() -> None:
    r = Result("b", "p50 ms", ours=300.0, baseline=100.0, goal=1.5)
    assert r.ratio == pytest.approx(3.0)
    assert r.verdict == stats.FAIL
    j = r.to_json()
    assert j["ratio"] == pytest.approx(3.0) and j["verdict"] == "FAIL"
    assert Result("b", "count", ours=3.0).verdict == stats.INFO


def test_history_breakdown_parts_sum_to_the_window() -> None:
    tl = WorkflowTimeline(
        started=100.010,
        activities=[
            ActivitySpan("record", 100.020, 100.021, 100.031),
            ActivitySpan("start", 100.050, 100.052, 100.552),
            ActivitySpan("record", 100.570, 100.571, 100.581),
            ActivitySpan("later", 200.0, 200.0, 200.1),  # outside the window: ignored
        ],
        workflow_tasks=[],
    )
    parts = breakdown(tl, begin=100.0, end=100.600)
    assert parts["scheduling"] == pytest.approx(20 + 19 + 18)
    assert parts["queue wait"] == pytest.approx(1 + 2 + 1)
    assert parts["exec:record"] == pytest.approx(20)
    assert parts["exec:start"] == pytest.approx(500)
    assert parts["tail"] == pytest.approx(19)
    assert parts["total"] == pytest.approx(600)
    assert sum(v for k, v in parts.items() if k != "total") == pytest.approx(parts["total"])


def test_workflow_task_stats_in_window() -> None:
    tl = WorkflowTimeline(
        started=0.0,
        activities=[],
        workflow_tasks=[(1.000, 1.010, 1.050), (2.000, 2.005, 2.020), (9.0, 9.1, 9.2)],
    )
    st = workflow_task_stats(tl, 0.5, 3.0)
    assert st["workflow tasks"] == 2
    assert st["workflow task pickup"] == pytest.approx(15)
    assert st["workflow task run"] == pytest.approx(55)
    assert st["first workflow task run"] == pytest.approx(40)


def test_markdown_keeps_the_comparable_rows_and_escapes_pipes() -> None:
    from bench.__main__ import render_markdown
    from bench.core import Result

    md = render_markdown(
        [
            Result("msg", "GOAL delivered/s", 120.0, 300.0, 1.0, higher_is_better=True),
            Result("msg", "  saturation 202: commit p50 ms", 3.0, note="profile"),
            Result("msg", "saturation cpu %", 90.0, note="cpu % of one core"),
            Result("msg", "p50 [vs a|b]", 30.0, 20.0),
        ],
        "2 cores",
        ["shared machine"],
    )
    rows = [line for line in md.splitlines() if line.startswith("| msg")]
    assert rows == [
        "| msg | GOAL delivered/s | 120.0 | 300.0 | 0.40x | >= 1x | FAIL |",
        "| msg | p50 [vs a\\|b] | 30.0 | 20.0 | 1.50x | - | info |",
    ]
    assert "Machine: 2 cores" in md and "- shared machine" in md
