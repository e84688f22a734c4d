"""Where a workflow's time went, read back from its Temporal history (no platform changes).

Event times come from the dev server on the same machine, so they share the wall clock of
`time.time()` in the harness: a client-side window [begin, end] can be cut into
  scheduling  — from the previous point (begin, or the previous activity's completion) to the
                next activity being scheduled: API handling, Temporal RPCs, workflow tasks;
  queue wait  — activity scheduled → started by the worker (schedule-to-start latency);
  exec:<name> — activity started → completed, per activity type;
  tail        — last activity completed → `end` (e.g. until a poll saw the new status).
The parts add up to end - begin.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from temporalio.api.enums.v1 import EventType


@dataclass(frozen=True)
class ActivitySpan:
    name: str
    scheduled: float  # epoch seconds
    started: float | None
    completed: float | None


@dataclass(frozen=True)
class WorkflowTimeline:
    started: float | None  # WorkflowExecutionStarted
    activities: list[ActivitySpan]
    workflow_tasks: list[tuple[float, float | None, float | None]]  # scheduled, started, completed


_CLOSED_ATTRS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
}


def _ts(event: Any) -> float:
    return float(event.event_time.ToMicroseconds()) / 1e6


async def timeline(client: Any, workflow_id: str) -> WorkflowTimeline:
    """Activities and workflow tasks of every run of `workflow_id` (the latest run chain)."""
    handle = client.get_workflow_handle(workflow_id)
    history = await handle.fetch_history()
    started: float | None = None
    spans: dict[int, dict[str, Any]] = {}
    tasks: dict[int, list[float | None]] = {}
    for ev in history.events:
        t = _ts(ev)
        et = ev.event_type
        if et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            started = t
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = ev.activity_task_scheduled_event_attributes
            spans[ev.event_id] = {
                "name": attrs.activity_type.name,
                "scheduled": t,
                "started": None,
                "completed": None,
            }
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            sid = ev.activity_task_started_event_attributes.scheduled_event_id
            if sid in spans:
                spans[sid]["started"] = t
        elif et in (
            EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        ):
            sid = getattr(ev, _CLOSED_ATTRS[et]).scheduled_event_id
            if sid in spans:
                spans[sid]["completed"] = t
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            tasks[ev.event_id] = [t, None, None]
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            sid = ev.workflow_task_started_event_attributes.scheduled_event_id
            if sid in tasks:
                tasks[sid][1] = t
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            sid = ev.workflow_task_completed_event_attributes.scheduled_event_id
            if sid in tasks:
                tasks[sid][2] = t
    acts = sorted((ActivitySpan(**s) for s in spans.values()), key=lambda a: a.scheduled)
    wts = [
        (s, st, c)
        for s, st, c in sorted(tasks.values(), key=lambda x: x[0] or 0.0)
        if s is not None
    ]
    return WorkflowTimeline(started, acts, wts)  # type: ignore[arg-type]


def breakdown(tl: WorkflowTimeline, begin: float, end: float) -> dict[str, float]:
    """Milliseconds per part of [begin, end] (see the module docstring); activities are those
    scheduled inside the window, in order. Overlapping activities are attributed in order."""
    parts: dict[str, float] = defaultdict(float)
    point = begin
    for act in tl.activities:
        if act.scheduled < begin or act.scheduled > end:
            continue
        parts["scheduling"] += max(0.0, act.scheduled - point) * 1000
        started = act.started if act.started is not None else act.scheduled
        completed = act.completed if act.completed is not None else started
        parts["queue wait"] += max(0.0, started - act.scheduled) * 1000
        parts[f"exec:{act.name}"] += max(0.0, completed - started) * 1000
        point = max(point, completed)
    parts["tail"] += max(0.0, end - point) * 1000
    parts["total"] = (end - begin) * 1000
    return dict(parts)


def activities_in(tl: WorkflowTimeline, begin: float, end: float) -> list[ActivitySpan]:
    return [a for a in tl.activities if begin <= a.scheduled <= end]


def workflow_task_stats(tl: WorkflowTimeline, begin: float, end: float) -> dict[str, float]:
    """Workflow tasks scheduled inside [begin, end]: how many, and their summed latency from
    scheduled to picked up by the worker and from picked up to completed (ms)."""
    count = 0
    pickup = run = 0.0
    first_run: float | None = None
    for scheduled, started, completed in tl.workflow_tasks:
        if not begin <= scheduled <= end:
            continue
        count += 1
        if started is not None:
            pickup += max(0.0, started - scheduled) * 1000
            if completed is not None:
                ms = max(0.0, completed - started) * 1000
                run += ms
                if first_run is None:
                    first_run = ms
    out = {"workflow tasks": float(count), "workflow task pickup": pickup, "workflow task run": run}
    if first_run is not None:
        out["first workflow task run"] = first_run
    return out
