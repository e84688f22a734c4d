"""WebSocket frames are strict JSON: a non-finite float is null, never a bare NaN/Infinity.

`json.dumps` writes NaN, Infinity and -Infinity by default; no JSON parser but Python's and
JavaScript's `eval` accepts them (`JSON.parse` throws), so one such value in an event's data
(a metrics sample, an agent's tool result) would break the client's stream.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from api.events_bus import encode_json, frame


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise AssertionError(f"non-JSON constant {constant} in {text}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_become_null_at_any_depth(bad: float) -> None:
    data = {
        "cpu_percent": bad,
        "ok": 1.5,
        "samples": [1, bad, {"deep": [bad, 2.0]}],
        "pair": (bad, "x"),
        bad: "key",
    }
    out = _strict(frame("metrics", "metrics_sample", data, event_id=7).text)
    assert isinstance(out, dict)
    assert out["data"] == {
        "cpu_percent": None,
        "ok": 1.5,
        "samples": [1, None, {"deep": [None, 2.0]}],
        "pair": [None, "x"],
        str(bad): "key",
    }
    assert out["id"] == 7 and out["channel"] == "metrics"


def test_finite_values_and_other_types_are_unchanged() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = {"a": [1, 2.5, True, None, "s"], "when": when}
    assert encode_json(value) == json.dumps(value, separators=(",", ":"), default=str)
    assert _strict(encode_json(value)) == {"a": [1, 2.5, True, None, "s"], "when": str(when)}
