"""Progress rules (issue #14 item 6): step counts, the estimate from the pace measured so far
(and the model's measured speed before the first step), whole percentages in the SDK and CLI,
and a watcher that never shows the same version twice or an older state after a newer."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from aintandem import CollaborationInfo
from aintandem._models import CollaborationProgress
from aintandem._resources import Collaboration, _Follower

from cli.client import _progress_line
from domain.collaboration import estimate_completion, step_counts, turn_seconds_from_speed

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _estimate(progress: dict[str, Any], *, progressed: float, now: float, **kw: Any) -> datetime:
    args: dict[str, Any] = {
        "created_at": T0,
        "started_at": _at(1),
        "progressed_at": _at(progressed),
        "progress": progress,
        "estimated_duration_seconds": 90,
        "timeout_seconds": 3600,
        "now": _at(now),
    }
    return estimate_completion(**(args | kw))


def test_step_counts_count_each_step_once() -> None:
    p = {"completed_steps": ["plan"], "remaining_steps": ["a", "b", "end"], "current_step": "a"}
    assert step_counts(p) == (1, 4)
    assert step_counts({"completed_steps": ["plan"], "current_step": "x"}) == (1, 2)
    assert step_counts({}) == (0, 0)


def test_the_estimate_comes_from_the_pace_per_step_not_the_plans_percentage_jump() -> None:
    # The plan took 30 s (1 s → 31 s) and is 1 of 5 steps: about 150 s in all. The old
    # percentage rule (10 % after the plan) said 300 s.
    progress = {
        "percentage": 10,
        "completed_steps": ["task_breakdown"],
        "remaining_steps": ["a", "b", "c", "integration"],
    }
    assert _estimate(progress, progressed=31, now=32) == _at(1 + 30 * 5)


def test_before_the_first_step_the_estimate_made_at_the_start_is_kept() -> None:
    progress = {"percentage": 0, "completed_steps": [], "remaining_steps": ["plan", "end"]}
    assert _estimate(progress, progressed=5, now=6) == _at(90)


def test_the_estimate_is_never_in_the_past_nor_after_the_deadline() -> None:
    progress = {"percentage": 50, "completed_steps": ["a"], "remaining_steps": ["b"]}
    assert _estimate(progress, progressed=11, now=100) == _at(100)  # late: not before now
    slow = {"percentage": 10, "completed_steps": ["a"], "remaining_steps": list("bcdefghij")}
    assert _estimate(slow, progressed=501, now=502, timeout_seconds=600) == _at(601)


def test_without_step_names_the_percentage_sets_the_pace() -> None:
    assert _estimate({"percentage": 25}, progressed=21, now=22) == _at(1 + 80)


def test_a_turn_from_the_models_measured_speed() -> None:
    # 100 tokens in 10 s and 300 in 10 s: 20 tokens/s; a typical turn writes 300 tokens.
    assert turn_seconds_from_speed([(10.0, 100), (10.0, 300), (15.0, 300)]) == 300 / (700 / 35)
    assert turn_seconds_from_speed([(0.0, 10), (5.0, 0)]) is None
    assert turn_seconds_from_speed([]) is None


def test_the_sdks_percentage_is_a_whole_number_and_steps_count_once() -> None:
    p = CollaborationProgress.model_validate(
        {
            "percentage": 36.66,
            "current_step": "b",
            "completed_steps": ["a"],
            "remaining_steps": ["b", "c"],
        }
    )
    assert p.percentage == 36 and isinstance(p.percentage, int)
    assert (p.steps_done, p.steps_total) == (1, 3)


def test_the_cli_line_shows_a_whole_percentage_and_a_fixed_total() -> None:
    snap = CollaborationInfo.model_validate(
        {
            "collaboration_id": "col_x",
            "status": "in_progress",
            "progress": {
                "percentage": 36.7,
                "current_step": "b",
                "completed_steps": ["a"],
                "remaining_steps": ["b", "c"],
            },
        }
    )
    line = _progress_line(snap)
    assert " 36%" in line and "step 1/3 b" in line and "36.7" not in line
    done = snap.model_copy(
        update={
            "status": "completed",
            "progress": CollaborationProgress(percentage=100, completed_steps=["a", "b", "c"]),
        }
    )
    assert _progress_line(done).endswith("step 3/3 -")


def _follower() -> _Follower:
    collab = Collaboration(
        SimpleNamespace(_core=None),
        CollaborationInfo.model_validate(
            {
                "collaboration_id": "col_x",
                "status": "in_progress",
                "participants": [{"sandbox_id": "sb_a", "status": "idle"}],
                "progress": {"percentage": 10, "completed_steps": ["plan"]},
            }
        ),
    )
    f = _Follower(collab, 1.0, 30.0)
    f.key = ""
    return f


def _event(version: int, pct: int, done: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "version": version,
        "status": extra.pop("status", "in_progress"),
        "progress": {
            "percentage": pct,
            "current_step": extra.pop("current", None),
            "completed_steps": done,
            "remaining_steps": [],
            "participants": {"sb_a": {"status": "active", "messages_exchanged": 2}},
        },
        "estimated_completion": "2026-01-01T12:05:00Z",
        **extra,
    }


def test_the_watcher_drops_a_version_it_has_seen_and_a_state_older_than_the_read() -> None:
    f = _follower()
    assert f.apply(_event(3, 20, ["plan", "a"], current="b"))
    info = f.collab.info
    assert info.progress is not None and info.progress.percentage == 20
    assert info.participants[0].status == "active" and info.participants[0].messages_exchanged == 2
    assert info.estimated_completion is not None
    assert not f.apply(_event(3, 20, ["plan", "a"], current="b"))  # the same version again
    assert not f.apply(_event(2, 10, ["plan"]))  # an older version
    assert f.apply(_event(4, 30, ["plan", "a", "b"]))
    f2 = _follower()
    assert not f2.apply(_event(1, 0, []))  # from before the read: behind what was shown
    assert f2.collab.info.progress.percentage == 10  # type: ignore[union-attr]
    # A final event is a new snapshot (its result kept); a repeat of it is not.
    end = _event(5, 100, ["plan", "a", "b"], status="completed", result={"plan_source": "x"})
    assert f.apply(end) and f.collab.info.done and f.collab.info.result == {"plan_source": "x"}
    assert not f.apply(end)


def test_collab_watch_is_a_command() -> None:
    from cli.main import build_parser  # the real parser: `aintandem collab watch ID`

    args = build_parser().parse_args(["collab", "watch", "col_x"])
    assert isinstance(args, argparse.Namespace) and args.collaboration == "col_x"
    assert args.func.__name__ == "cmd_collab_watch"
