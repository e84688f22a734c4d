"""Small pure helpers of the benchmark harness: percentiles, ratios, verdicts, the table.

No I/O and nothing of the platform, so they are unit-tested on their own
(tests/unit/test_bench_stats.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

PASS = "PASS"
FAIL = "FAIL"
INFO = "info"
NO_DATA = "n/a"


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0 ≤ p ≤ 100) with linear interpolation between closest ranks
    (numpy's default "linear" method). Raises ValueError on an empty sequence."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p95, max and mean of a sample (empty sample: n = 0 only)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": float(min(values)),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": float(max(values)),
        "mean": sum(values) / len(values),
    }


def ratio(ours: float | None, baseline: float | None) -> float | None:
    """ours / baseline; None when either is missing or the baseline is not positive."""
    if ours is None or baseline is None or baseline <= 0:
        return None
    return ours / baseline


def verdict(
    ours: float | None, baseline: float | None, goal: float | None, higher_is_better: bool = False
) -> str:
    """PASS/FAIL against a goal on the ratio ours/baseline.

    For latencies (lower is better) the goal is a maximum ratio (ours <= goal * baseline); for
    throughputs (higher is better) a minimum (ours >= goal * baseline). No goal: "info"; a goal
    but no number to judge: "n/a".
    """
    if goal is None:
        return INFO
    r = ratio(ours, baseline)
    if r is None:
        return NO_DATA
    ok = r >= goal if higher_is_better else r <= goal
    return PASS if ok else FAIL


def fmt_number(value: float | None, digits: int = 1) -> str:
    """A table cell: "-" for missing, thousands separators, `digits` decimals below 1000."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_goal(goal: float | None, higher_is_better: bool = False) -> str:
    if goal is None:
        return "-"
    return f"{'>=' if higher_is_better else '<='} {goal:g}x"


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align_right: Sequence[bool] | None = None
) -> str:
    """A plain-text table with a header rule; columns padded to their widest cell."""
    ncols = len(headers)
    for row in rows:
        if len(row) != ncols:
            raise ValueError(f"row has {len(row)} cells, expected {ncols}: {row!r}")
    right = list(align_right) if align_right is not None else [False] * ncols
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])
