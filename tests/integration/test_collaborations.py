"""Collaborations end to end on the real stack (Temporal, worker, Docker, real `openai` SDK
against a scripted loopback provider): the three modes, timeout, cancel, a failing
participant, validation, progress, the Temporal view, replay. The run with the real offline
model is tests/e2e/test_collaboration_offline.py (a fresh `aintandem up`)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from api.services import collaborations as collaboration_service
from config.payload_codec import data_converter
from domain.collaboration import DONE_MARKER
from domain.ids import collaboration_workflow_id, message_workflow_id
from store.db import create_engine, session_factory
from store.models import Event
from tests.conftest import Account
from tests.integration.conftest import Stack, eventually
from tests.unit.test_llm_providers import FakeProvider, Scripted, fake_server, openai_reply
from workflows.collaboration import CollaborationWorkflow
from workflows.message_delivery import MessageDeliveryWorkflow

pytestmark = [pytest.mark.docker, pytest.mark.temporal]
__all__ = ["fake_server"]

AGENTS = {"frontend-team": "fe-lead", "backend-team": "be-lead", "security-team": "sec-lead"}
DELIVERABLES = ["backend_api", "frontend_components", "security_review"]
PLAN = {
    "steps": [
        {
            "id": "api",
            "assignee": "backend-team",
            "deliverable": "backend_api",
            "instructions": "Design the auth API",
        },
        {
            "id": "ui",
            "assignee": "frontend-team",
            "deliverable": "frontend_components",
            "instructions": "Build the login form on the API",
            "depends_on": ["api"],
        },
        {
            "id": "review",
            "assignee": "security-team",
            "deliverable": "security_review",
            "instructions": "Review the API",
            "depends_on": ["api"],
        },
    ]
}


@dataclass
class Team:
    acc: Account
    wid: str
    ids: dict[str, str]  # sandbox name → id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def team(stack: Stack, fake_server: FakeProvider) -> AsyncIterator[Team]:
    """Three running sandboxes whose agents talk to the scripted provider (shared by the
    module's tests; each test scripts the provider itself)."""
    acc = await stack.account()
    r = await stack.client.post(
        "/api/v1/workspaces",
        headers=acc.headers,
        json={"name": f"collab-{uuid.uuid4().hex[:6]}", "settings": {}},
    )
    wid = r.json()["data"]["workspace_id"]
    r = await stack.client.put(
        f"/api/v1/workspaces/{wid}/config",
        headers=acc.headers,
        json={
            "llm_providers": [
                {
                    "name": "openai",
                    "api_key": "sk-test",
                    "base_url": f"{fake_server.base}/v1",
                    "models": ["gpt-test"],
                    "default_model": "gpt-test",
                }
            ]
        },
    )
    assert r.status_code == 200, r.text
    ids = {}
    for name, agent in AGENTS.items():
        ids[name] = await stack.sandbox(
            acc,
            wid,
            name=name,
            agent_config={"primary_agent": {"name": agent, "role": name.split("-")[0]}},
        )
    for sid in ids.values():
        await stack.wait_status(acc, sid, "running")
    yield Team(acc, wid, ids)
    await stack.client.delete(f"/api/v1/workspaces/{wid}", headers=acc.headers)


# -- the scripted provider --------------------------------------------------------------------

_AGENT = re.compile(r"You are ([\w\-]+), the")


def _turn(body: dict[str, Any]) -> tuple[str, str]:
    """(agent name, the turn's text) of an OpenAI chat request."""
    msgs = body["messages"]
    system = next(m["content"] for m in msgs if m["role"] == "system")
    user = "\n".join(str(m.get("content") or "") for m in msgs if m["role"] == "user")
    match = _AGENT.search(system)
    assert match, system
    return match.group(1), user


def _ok(text: str, delay: float = 0.0) -> Scripted:
    return Scripted(200, openai_reply(text), delay=delay)


def orchestrated_script(
    slow: Callable[[str], float] = lambda step: 0.0,
    fail_agent: str | None = None,
) -> Callable[[dict[str, Any]], Scripted]:
    plans = {"n": 0}

    def respond(body: dict[str, Any]) -> Scripted:
        agent, text = _turn(body)
        if agent == fail_agent:
            return Scripted(401, {"error": {"message": "invalid api key", "type": "auth"}})
        if "You orchestrate a collaboration" in text:
            plans["n"] += 1
            if plans["n"] == 1:  # the first plan is invalid: the orchestrator is asked again
                return _ok('{"steps": [{"id": "x", "assignee": "nobody"}]}')
            return _ok("```json\n" + json.dumps(PLAN) + "\n```")
        step = re.search(r"Your step '(\w+)'", text)
        if step:
            sid = step.group(1)
            deliverable = next(s["deliverable"] for s in PLAN["steps"] if s["id"] == sid)
            saw = "saw-api" if "POST /auth/login" in text else "no-input"
            body_text = "POST /auth/login" if sid == "api" else f"{sid} built on it ({saw})"
            return _ok(f"## {deliverable}\n{body_text} by {agent}", delay=slow(sid))
        if "Integrate them" in text:
            return _ok(f"Integrated {text.count('## ')} deliverables by {agent}")
        return Scripted(500, {"error": {"message": f"unexpected turn: {text[:200]}"}})

    return respond


# -- helpers ------------------------------------------------------------------------------------


async def orchestrate(stack: Stack, t: Team, **body: Any) -> str:
    payload = {
        "task": "Implement user authentication feature",
        "participants": list(AGENTS),
        "collaboration_mode": "orchestrated",
        "timeout": 300,
        "deliverables": DELIVERABLES,
        **body,
    }
    r = await stack.client.post(
        f"/api/v1/workspaces/{t.wid}/collaboration/orchestrate", headers=t.acc.headers, json=payload
    )
    assert r.status_code == 202, r.text
    data = r.json()["data"]
    assert data["status"] == "initializing"
    assert data["participants"] == [t.ids[n] for n in payload["participants"]]
    assert 0 < data["estimated_duration_seconds"] <= payload["timeout"]
    return str(data["collaboration_id"])


async def get(stack: Stack, t: Team, cid: str) -> dict[str, Any]:
    r = await stack.client.get(f"/api/v1/collaborations/{cid}", headers=t.acc.headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


async def finished(stack: Stack, t: Team, cid: str, timeout: float = 120) -> dict[str, Any]:
    return await eventually(
        lambda: get(stack, t, cid),
        lambda d: d["status"] in ("completed", "failed", "cancelled"),
        timeout,
        f"collaboration {cid} to finish",
    )


async def stream(stack: Stack, cid: str) -> list[dict[str, Any]]:
    """The collaboration's events, in order, as the WebSocket replays them from id 0."""
    engine = create_engine(stack.settings.resolved_database_url)
    try:
        async with session_factory(engine)() as s:
            rows = await s.scalars(
                select(Event).where(Event.collaboration_id == cid).order_by(Event.id)
            )
            return [{"channel": e.channel, "event": e.event, "data": e.data} for e in rows]
    finally:
        await engine.dispose()


def assert_progress_consistent(events: list[dict[str, Any]]) -> list[int]:
    progress = [e["data"]["progress"] for e in events if e["channel"] == "collaboration"]
    pct = [p["percentage"] for p in progress]
    assert pct == sorted(pct), f"progress went down: {pct}"
    for p in progress:
        assert not set(p["completed_steps"]) & set(p["remaining_steps"]), p
    completed = [len(p["completed_steps"]) for p in progress]
    assert completed == sorted(completed), "a completed step was forgotten"
    return pct


# -- the three modes ------------------------------------------------------------------------------


async def test_orchestrated_plans_runs_dependent_and_parallel_steps_and_integrates(
    stack: Stack, team: Team, fake_server: FakeProvider
) -> None:
    fake_server.reset()
    fake_server.responder = orchestrated_script(slow=lambda s: 1.0 if s != "api" else 0.0)
    cid = await orchestrate(stack, team)
    d = await finished(stack, team, cid)
    assert d["status"] == "completed", d
    assert d["error"] is None and d["completed_at"] and d["started_at"]
    assert d["progress"]["percentage"] == 100 and d["progress"]["remaining_steps"] == []
    done = d["progress"]["completed_steps"]
    assert done[0] == "task_breakdown" and done[1] == "api" and done[-1] == "integration"
    assert set(done[2:4]) == {"ui", "review"}
    # The orchestrator's first plan failed validation; it was asked again and its plan used.
    steps = {s["step"]: s for s in d["steps"]}
    assert steps["task_breakdown"]["attempts"] == 2 and d["result"]["plan_source"] == "orchestrator"
    assert d["result"]["summary"] == "Integrated 3 deliverables by fe-lead"
    # The plan was asked for as JSON matching the plan's schema (structured outputs); the
    # steps, free text with tools.
    formats = [
        (r.body.get("response_format") or {}).get("json_schema", {}).get("name")
        for r in fake_server.requests
        if "You orchestrate a collaboration" in _turn(r.body)[1]
    ]
    assert formats == ["collaboration_plan", "collaboration_plan"], formats
    step_formats = [
        r.body.get("response_format") for r in fake_server.requests if r.body.get("tools")
    ]
    assert step_formats and not any(step_formats)
    # Deliverables came from the assignees' agents, each step fed the outputs it depends on.
    assert d["deliverables"] == {
        "backend_api": "POST /auth/login by be-lead",
        "frontend_components": "ui built on it (saw-api) by fe-lead",
        "security_review": "review built on it (saw-api) by sec-lead",
    }
    by_step: dict[str, list[dict[str, Any]]] = {}
    for m in d["messages"]:
        by_step.setdefault(m["step"] or f"reply-{m['content'].get('text', '')[:20]}", []).append(m)
    for sid, who in (("api", "backend-team"), ("ui", "frontend-team"), ("review", "security-team")):
        (request,) = by_step[sid]
        assert request["to"] == team.ids[who] and request["status"] == "responded"
        r = await stack.client.get(
            f"/api/v1/messages/{request['message_id']}", headers=team.acc.headers
        )
        assert r.json()["data"]["response"]["from_agent"] == AGENTS[who]
    # ui and review ran in parallel: each started before the other's reply arrived.
    times = {m["message_id"]: m["timestamp"] for m in d["messages"]}
    replies = {m["content"].get("text", ""): m["timestamp"] for m in d["messages"] if not m["step"]}
    ui_reply = next(ts for text, ts in replies.items() if "ui built" in text)
    review_reply = next(ts for text, ts in replies.items() if "review built" in text)
    assert times[by_step["ui"][0]["message_id"]] < review_reply
    assert times[by_step["review"][0]["message_id"]] < ui_reply
    participants = {p["sandbox_id"]: p for p in d["participants"]}
    assert participants[team.ids["security-team"]]["messages_exchanged"] == 2  # step + reply
    assert all(p["status"] == "idle" for p in participants.values())
    # Progress: monotone, mirrored to the stream on every change, consistent with the steps.
    events = await stream(stack, cid)
    pct = assert_progress_consistent(events)
    assert pct[-1] == 100 and len(set(pct)) >= 4
    names = [e["event"] for e in events if e["channel"] == "collaboration"]
    assert names[0] == "collaboration_started" and names[-1] == "collaboration_completed"
    assert {"plan_ready", "step_started", "step_completed"} <= set(names)
    assert any(e["channel"] == "messages" and e["event"] == "message_responded" for e in events)
    # The operator's view: the collaboration and its steps as child workflows, by search attribute.
    client = stack.temporal.client
    found = await eventually(
        lambda: _list(client, f'AintandemCollaborationId = "{cid}"'),
        lambda ids: len(ids) >= 7,  # the collaboration + 2 plan turns + 3 steps + integration
        30,
        "workflows searchable by collaboration id",
    )
    assert collaboration_workflow_id(cid) in found
    assert message_workflow_id(by_step["api"][0]["message_id"]) in found
    desc = await client.get_workflow_handle(
        message_workflow_id(by_step["api"][0]["message_id"])
    ).describe()
    assert desc.parent_id == collaboration_workflow_id(cid)
    # Replay: the recorded history replays deterministically against the current code.
    history = await client.get_workflow_handle(collaboration_workflow_id(cid)).fetch_history()
    await Replayer(
        workflows=[CollaborationWorkflow, MessageDeliveryWorkflow],
        data_converter=data_converter(stack.settings),  # the worker's: payloads are encrypted
    ).replay_workflow(history)


async def _list(client: Any, query: str) -> set[str]:
    return {w.id async for w in client.list_workflows(query)}


async def test_peer_to_peer_takes_turns_on_the_shared_conversation_until_done(
    stack: Stack, team: Team, fake_server: FakeProvider
) -> None:
    fake_server.reset()

    def respond(body: dict[str, Any]) -> Scripted:
        agent, text = _turn(body)
        assert "peer-to-peer collaboration" in text, text
        turns = text.count("\n[")  # turns in the conversation so far
        done = f"\n{DONE_MARKER}" if turns >= 2 else ""
        return _ok(f"## result\n{agent} adds part {turns + 1}{done}")

    fake_server.responder = respond
    cid = await orchestrate(
        stack, team, collaboration_mode="peer_to_peer", deliverables=["result"], max_turns=6
    )
    d = await finished(stack, team, cid)
    assert d["status"] == "completed", d
    assert d["result"]["turns"] == 3 and "sec-lead" not in d["result"]["ended_by"]
    assert "security-team declared" in d["result"]["ended_by"]
    assert [c["participant"] for c in d["result"]["conversation"]] == list(AGENTS)
    assert d["deliverables"] == {"result": f"sec-lead adds part 3\n{DONE_MARKER}"}
    assert d["progress"]["percentage"] == 100
    # Each turn saw the whole conversation before it.
    last_turn = _turn(fake_server.requests[-1].body)[1]
    assert "fe-lead adds part 1" in last_turn and "be-lead adds part 2" in last_turn
    # No orchestrator in the loop: each turn was sent by the previous speaker.
    turns = [m for m in d["messages"] if m["step"]]
    assert [(m["from"], m["to"]) for m in turns] == [
        (team.ids["security-team"], team.ids["frontend-team"]),
        (team.ids["frontend-team"], team.ids["backend-team"]),
        (team.ids["backend-team"], team.ids["security-team"]),
    ]
    assert_progress_consistent(await stream(stack, cid))


async def test_swarm_proposes_in_parallel_votes_and_keeps_the_consensus_and_votes(
    stack: Stack, team: Team, fake_server: FakeProvider
) -> None:
    fake_server.reset()
    ballots = {"fe-lead": 2, "be-lead": 2, "sec-lead": 1}

    def respond(body: dict[str, Any]) -> Scripted:
        agent, text = _turn(body)
        if "propose a complete solution" in text:
            return _ok(f"## design\nproposal by {agent}")
        if "VOTE: <number>" in text:
            assert "Proposal 3 (by security-team)" in text
            return _ok(f"I rank them.\nVOTE: {ballots[agent]}")
        return Scripted(500, {"error": {"message": "unexpected"}})

    fake_server.responder = respond
    cid = await orchestrate(stack, team, collaboration_mode="swarm", deliverables=["design"])
    d = await finished(stack, team, cid)
    assert d["status"] == "completed", d
    res = d["result"]
    assert res["winner"] == {"proposal": 2, "sandbox_id": team.ids["backend-team"]}
    assert res["votes"] == {
        team.ids["frontend-team"]: 2,
        team.ids["backend-team"]: 2,
        team.ids["security-team"]: 1,
    }
    assert "majority" in res["decided_by"]
    assert d["deliverables"] == {"design": "proposal by be-lead"}
    assert len(res["proposals"]) == 3
    assert d["progress"]["completed_steps"][-1] == "consensus"
    assert_progress_consistent(await stream(stack, cid))


# -- failure, timeout, cancel ------------------------------------------------------------------


async def test_a_failing_participant_is_retried_then_fails_the_collaboration_cleanly(
    stack: Stack, team: Team, fake_server: FakeProvider
) -> None:
    fake_server.reset()
    fake_server.responder = orchestrated_script(fail_agent="sec-lead")
    cid = await orchestrate(stack, team)
    d = await finished(stack, team, cid)
    assert d["status"] == "failed", d
    assert d["error"]["code"] == "COLLABORATION_FAILED"
    assert "review (security-team) failed after 2 attempts" in d["error"]["message"]
    review = next(s for s in d["steps"] if s["step"] == "review")
    assert review["status"] == "failed" and review["attempts"] == 2
    assert len(review["message_ids"]) == 2
    participants = {p["sandbox_id"]: p["status"] for p in d["participants"]}
    assert participants[team.ids["security-team"]] == "failed"
    assert d["deliverables"]["backend_api"] == "POST /auth/login by be-lead"  # partial work kept
    assert "integration" not in d["progress"]["completed_steps"]
    # In the Temporal UI, the collaboration and the failed step deliveries are *failed*
    # workflows (not a green COMPLETED), found by the status filter.
    client = stack.temporal.client
    failed = await eventually(
        lambda: _list(client, f'AintandemCollaborationId = "{cid}" AND ExecutionStatus = "Failed"'),
        lambda ids: len(ids) >= 3,
        30,
        "failed workflows by status",
    )
    assert collaboration_workflow_id(cid) in failed
    assert {message_workflow_id(m) for m in review["message_ids"]} <= failed
    with pytest.raises(WorkflowFailureError) as info:
        await client.get_workflow_handle(collaboration_workflow_id(cid)).result()
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "CollaborationFailed"
    assert "failed after 2 attempts" in info.value.cause.message


async def test_timeout_fails_it_with_partial_deliverables_and_stops_the_steps(
    stack: Stack, team: Team, fake_server: FakeProvider
) -> None:
    fake_server.reset()
    fake_server.responder = orchestrated_script(slow=lambda s: 0.0 if s == "api" else 120.0)
    started = time.monotonic()
    cid = await orchestrate(stack, team, timeout=30)
    d = await finished(stack, team, cid, timeout=90)
    assert d["status"] == "failed", d
    assert d["error"] == {"code": "COLLABORATION_FAILED", "message": "timed out after 30 s"}
    assert 30 <= time.monotonic() - started < 60
    assert d["deliverables"] == {"backend_api": "POST /auth/login by be-lead"}
    steps = {s["step"]: s["status"] for s in d["steps"]}
    assert steps["api"] == "completed" and steps["ui"] == steps["review"] == "cancelled"
    in_flight = [m for m in d["messages"] if m["step"] in ("ui", "review")]
    assert in_flight and all(m["status"] == "failed" for m in in_flight), in_flight
    await _children_closed(stack, in_flight)


async def test_cancel_stops_it_and_every_step_in_flight(
    stack: Stack, team: Team, fake_server: FakeProvider
) -> None:
    fake_server.reset()
    fake_server.responder = orchestrated_script(slow=lambda s: 120.0)
    cid = await orchestrate(stack, team)
    await eventually(
        lambda: get(stack, team, cid),
        lambda d: d["progress"]["current_step"] == "api",
        60,
        "the first step to start",
    )
    r = await stack.client.post(
        f"/api/v1/collaborations/{cid}/cancel",
        headers=team.acc.headers,
        json={"reason": "changed my mind"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["data"] == {
        "collaboration_id": cid,
        "status": "cancelled",
        "cancel_requested": True,
    }
    d = await get(stack, team, cid)
    assert d["status"] == "cancelled" and d["completed_at"]
    assert d["error"] == {"code": None, "message": "changed my mind"}
    assert {s["step"]: s["status"] for s in d["steps"]}["api"] == "cancelled"
    api_msgs = [m for m in d["messages"] if m["step"] == "api"]
    assert api_msgs and all(m["status"] == "failed" for m in api_msgs)
    replies = [m for m in d["messages"] if m["message_type"] == "response"]
    assert replies and all(m["status"] == "delivered" for m in replies)  # answers stay answers
    await _children_closed(stack, api_msgs)
    again = await stack.client.post(
        f"/api/v1/collaborations/{cid}/cancel", headers=team.acc.headers
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "COLLABORATION_FAILED"


async def test_a_cancel_that_takes_long_answers_202_and_still_cancels(
    stack: Stack, team: Team, fake_server: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_server.reset()
    fake_server.responder = orchestrated_script(slow=lambda s: 120.0)
    cid = await orchestrate(stack, team)
    await eventually(
        lambda: get(stack, team, cid),
        lambda d: d["progress"]["current_step"] == "api",
        60,
        "the first step to start",
    )
    # The request waits this long for the steps to stop, then answers with the status so far.
    monkeypatch.setattr(collaboration_service, "CANCEL_WAIT_SECONDS", 0.001)
    r = await stack.client.post(f"/api/v1/collaborations/{cid}/cancel", headers=team.acc.headers)
    assert r.status_code == 202, r.text
    assert r.json()["data"] == {
        "collaboration_id": cid,
        "status": "in_progress",
        "cancel_requested": True,
    }
    d = await finished(stack, team, cid, timeout=30)
    assert d["status"] == "cancelled"


async def _children_closed(stack: Stack, messages: list[dict[str, Any]]) -> None:
    """Each step's delivery workflow was cancelled or terminated, or never started (a cancel
    that lands while the child is being started stops it before it exists)."""
    for m in messages:
        handle = stack.temporal.client.get_workflow_handle(message_workflow_id(m["message_id"]))

        async def describe(handle: Any = handle) -> Any:
            try:
                return await handle.describe()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return None
                raise

        desc = await eventually(
            describe,
            lambda d: d is None or d.status != WorkflowExecutionStatus.RUNNING,
            30,
            f"step workflow of {m['message_id']} to stop",
        )
        assert desc is None or desc.status in (
            WorkflowExecutionStatus.CANCELED,
            WorkflowExecutionStatus.TERMINATED,
        )


# -- the request ------------------------------------------------------------------------------


async def test_orchestrate_validates_the_team_before_starting_anything(
    stack: Stack, team: Team
) -> None:
    url = f"/api/v1/workspaces/{team.wid}/collaboration/orchestrate"
    base = {"task": "t", "participants": ["frontend-team", "backend-team"]}

    async def post(acc: Account = team.acc, **body: Any) -> tuple[int, dict[str, Any]]:
        r = await stack.client.post(url, headers=acc.headers, json={**base, **body})
        return r.status_code, r.json()

    for body, field in (
        ({"participants": ["frontend-team"]}, "participants"),
        ({"participants": ["frontend-team", "frontend-team"]}, "participants"),
        ({"collaboration_mode": "democracy"}, "collaboration_mode"),
        ({"timeout": 10}, "timeout"),
        ({"task": "   "}, "task"),
        ({"owner_id": "usr_x"}, "owner_id"),
    ):
        status, out = await post(**body)
        assert status == 422, (body, out)
        assert field in json.dumps(out["error"]["details"]), out
    status, out = await post(participants=["frontend-team", team.ids["frontend-team"]])
    assert status == 422 and "listed twice" in out["error"]["message"]
    status, out = await post(orchestrator="nobody")
    assert status == 422 and "orchestrator" in json.dumps(out["error"]["details"])
    status, out = await post(participants=["frontend-team", "ghost-team"])
    assert status == 404 and out["error"]["code"] == "RESOURCE_NOT_FOUND"
    fresh = await stack.sandbox(team.acc, team.wid, name=f"new-{uuid.uuid4().hex[:4]}")
    status, out = await post(participants=["frontend-team", fresh])
    assert status == 409 and out["error"]["code"] == "SANDBOX_NOT_READY", out
    # The policy is checked for every message the mode needs.
    policy = {"mode": "allow_list", "rules": [{"from": "frontend-team", "to": "*"}]}
    r = await stack.client.put(
        f"/api/v1/workspaces/{team.wid}/config",
        headers=team.acc.headers,
        json={"collaboration_policy": policy},
    )
    assert r.status_code == 200, r.text
    try:
        status, out = await post(collaboration_mode="peer_to_peer")  # backend → frontend
        assert status == 403 and out["error"]["code"] == "AUTHORIZATION_FAILED", out
        status, out = await post(collaboration_mode="swarm", timeout=30)  # frontend → all
        assert status == 202, out
        await stack.client.post(
            f"/api/v1/collaborations/{out['data']['collaboration_id']}/cancel",
            headers=team.acc.headers,
        )
    finally:
        await stack.client.put(
            f"/api/v1/workspaces/{team.wid}/config",
            headers=team.acc.headers,
            json={"collaboration_policy": {"mode": "allow_all"}},
        )
        await stack.client.delete(f"/api/v1/sandboxes/{fresh}", headers=team.acc.headers)
    # Another user sees nothing of it.
    stranger = await stack.account()
    assert (await post(stranger))[0] == 404
    r = await stack.client.get(
        f"/api/v1/collaborations/{out['data']['collaboration_id']}", headers=stranger.headers
    )
    assert r.status_code == 404
    for bad in ("col_0000000000", "nope"):
        r = await stack.client.get(f"/api/v1/collaborations/{bad}", headers=team.acc.headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
