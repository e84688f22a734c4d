"""Sandboxes end to end: API → SandboxWorkflow → real Docker containers, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from domain.containers import container_name, pids_limit
from tests.conftest import assert_error
from tests.integration.conftest import Stack, eventually

pytestmark = [pytest.mark.docker, pytest.mark.temporal]


def _container(stack: Stack, sid: str) -> Any:
    return stack.docker.containers.get(container_name(sid))


async def test_full_lifecycle_with_real_limits(stack: Stack) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    r = await stack.client.post(
        f"/api/v1/workspaces/{wid}/sandboxes",
        headers=acc.headers,
        json={
            "name": "frontend-team",
            "agent_config": {
                "primary_agent": {
                    "name": "frontend-architect",
                    "role": "Frontend Architect",
                    "system_prompt": "Expert in React",
                },
                "sub_agents": [{"name": "react-expert", "role": "React Specialist"}],
            },
            "resources": {"memory_mb": 256, "cpu_cores": 0.5, "max_processes": 20},
            "environment_variables": {"NODE_ENV": "development", "API_TOKEN": "s3cret"},
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()["data"]
    sid = created["sandbox_id"]
    assert created["status"] == "provisioning"
    assert created["connection_details"]["collaboration_bus_url"].endswith(f"/ws/sandboxes/{sid}")
    assert created["connection_details"]["api_endpoint"].endswith(f"/api/v1/sandboxes/{sid}")

    running = await stack.wait_status(acc, sid, "running")
    assert running["started_at"] and running["resources"]["memory_mb"] == 256
    assert running["agent_config"]["sub_agents"][0]["name"] == "react-expert"

    c = _container(stack, sid)
    hc = c.attrs["HostConfig"]
    assert hc["Memory"] == 256 * 1024 * 1024 == hc["MemorySwap"]
    assert hc["NanoCpus"] == 500_000_000
    assert hc["PidsLimit"] == pids_limit(20)
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"][0]
    assert hc["Init"] is True and hc["Privileged"] is False
    assert not hc.get("Binds") and "docker.sock" not in str(c.attrs.get("Mounts"))
    assert "NODE_ENV=development" in c.attrs["Config"]["Env"]
    assert c.labels["aintandem.sandbox_id"] == sid and c.labels["aintandem.workspace_id"] == wid

    # The health loop records real logs and metrics.
    logs = await eventually(
        lambda: stack.client.get(f"/api/v1/sandboxes/{sid}/logs", headers=acc.headers),
        lambda r: any(
            "Agent runtime started" in line["message"] for line in r.json()["data"]["logs"]
        ),
        30,
        "the runtime's start line in the logs",
    )
    assert logs.json()["data"]["meta"]["total"] >= 1
    metrics = await eventually(
        lambda: stack.client.get(f"/api/v1/sandboxes/{sid}/metrics", headers=acc.headers),
        lambda r: (r.json()["data"]["resources"] or {}).get("memory_usage_mb", 0) > 0,
        30,
        "metrics",
    )
    m = metrics.json()["data"]
    assert 0 < m["resources"]["memory_usage_mb"] < 256
    assert m["health"]["restart_count"] == 0 and m["timestamp"].endswith("Z")
    status = (
        await stack.client.get(f"/api/v1/sandboxes/{sid}/status", headers=acc.headers)
    ).json()["data"]
    assert (
        status["health"]["status"] == "healthy"
        and status["resources"]["memory_mb"]["allocated"] == 256
    )
    assert status["resources"]["memory_mb"]["used"] > 0
    detail = await stack.get(acc, sid)
    assert detail["metrics"]["memory_usage_mb"] > 0 and detail["health"]["last_heartbeat"]

    # Secrets in env vars are masked in the config view.
    cfg = (await stack.client.get(f"/api/v1/sandboxes/{sid}/config", headers=acc.headers)).json()[
        "data"
    ]
    assert cfg["environment_variables"] == {"NODE_ENV": "development", "API_TOKEN": "********"}

    # stop → start → restart, each a 202 with the transitional status.
    r = await stack.client.post(f"/api/v1/sandboxes/{sid}/stop", headers=acc.headers)
    assert r.status_code == 202 and r.json()["data"]["status"] == "stopping"
    await stack.wait_status(acc, sid, "stopped")
    _c = _container(stack, sid)
    assert _c.status == "exited"
    r = await stack.client.post(f"/api/v1/sandboxes/{sid}/start", headers=acc.headers)
    assert r.status_code == 202
    assert r.json()["data"] == {
        "sandbox_id": sid,
        "status": "starting",
        "estimated_ready_seconds": 5,
    }
    await stack.wait_status(acc, sid, "running")
    r = await stack.client.post(f"/api/v1/sandboxes/{sid}/restart", headers=acc.headers)
    assert r.status_code == 202 and r.json()["data"]["status"] == "restarting"
    await stack.wait_status(acc, sid, "running")

    # Resources change on the live container.
    r = await stack.client.put(
        f"/api/v1/sandboxes/{sid}/config",
        headers=acc.headers,
        json={"resources": {"memory_mb": 512, "cpu_cores": 1}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["applied"]["resources"] == "live"
    hc = _container(stack, sid).attrs["HostConfig"]
    assert hc["Memory"] == 512 * 1024 * 1024 and hc["NanoCpus"] == 1_000_000_000
    assert _container(stack, sid).status == "running"

    # Delete removes the container, then the sandbox.
    r = await stack.client.delete(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
    assert r.status_code == 204
    assert not stack.docker.api.containers(all=True, filters={"name": container_name(sid)})
    assert_error(
        await stack.client.get(f"/api/v1/sandboxes/{sid}", headers=acc.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_impossible_transitions_are_409(stack: Stack) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, sid, "running")
    assert_error(
        await stack.client.post(f"/api/v1/sandboxes/{sid}/start", headers=acc.headers),
        409,
        "SANDBOX_NOT_READY",
    )
    assert (
        await stack.client.post(f"/api/v1/sandboxes/{sid}/stop", headers=acc.headers)
    ).status_code == 202
    body = assert_error(
        await stack.client.post(f"/api/v1/sandboxes/{sid}/stop", headers=acc.headers),
        409,
        "SANDBOX_NOT_READY",
    )
    assert "stopp" in body["error"]["message"]
    await stack.wait_status(acc, sid, "stopped")
    assert_error(
        await stack.client.post(f"/api/v1/sandboxes/{sid}/restart", headers=acc.headers),
        409,
        "SANDBOX_NOT_READY",
    )
    # The workflow is not stuck: a valid operation still works.
    assert (
        await stack.client.post(f"/api/v1/sandboxes/{sid}/start", headers=acc.headers)
    ).status_code == 202
    await stack.wait_status(acc, sid, "running")


async def test_quota_names_listing_and_ownership(stack: Stack) -> None:
    acc = await stack.account()
    other = await stack.account()
    wid = await stack.workspace(acc, max_sandboxes=2)
    a = await stack.sandbox(acc, wid, name="alpha")
    assert_error(
        await stack.client.post(
            f"/api/v1/workspaces/{wid}/sandboxes",
            headers=acc.headers,
            json={"name": "alpha", "agent_config": {"primary_agent": {"name": "x", "role": "y"}}},
        ),
        409,
        "RESOURCE_ALREADY_EXISTS",
    )
    b = await stack.sandbox(acc, wid, name="bravo")
    body = assert_error(
        await stack.client.post(
            f"/api/v1/workspaces/{wid}/sandboxes",
            headers=acc.headers,
            json={"name": "charlie", "agent_config": {"primary_agent": {"name": "x", "role": "y"}}},
        ),
        409,
        "RESOURCE_EXHAUSTED",
    )
    assert body["error"]["details"]["limit"] == 2
    await stack.wait_status(acc, a, "running")
    await stack.wait_status(acc, b, "running")
    await stack.client.post(f"/api/v1/sandboxes/{b}/stop", headers=acc.headers)
    await stack.wait_status(acc, b, "stopped")

    listed = (
        await stack.client.get(
            f"/api/v1/workspaces/{wid}/sandboxes", headers=acc.headers, params={"status": "running"}
        )
    ).json()
    assert [s["sandbox_id"] for s in listed["data"]] == [a] and listed["meta"]["total"] == 1
    listed = (
        await stack.client.get(
            f"/api/v1/workspaces/{wid}/sandboxes",
            headers=acc.headers,
            params={"sort": "name", "order": "asc", "search": "RAV"},
        )
    ).json()
    assert [s["name"] for s in listed["data"]] == ["bravo"]
    assert_error(
        await stack.client.get(
            f"/api/v1/workspaces/{wid}/sandboxes",
            headers=acc.headers,
            params={"status": "provisioning"},
        ),
        422,
        "VALIDATION_ERROR",
    )

    # Someone else's sandbox does not exist for them, on every route.
    for method, path in [
        ("GET", f"/api/v1/sandboxes/{a}"),
        ("POST", f"/api/v1/sandboxes/{a}/stop"),
        ("POST", f"/api/v1/sandboxes/{a}/start"),
        ("POST", f"/api/v1/sandboxes/{a}/restart"),
        ("GET", f"/api/v1/sandboxes/{a}/logs"),
        ("GET", f"/api/v1/sandboxes/{a}/status"),
        ("GET", f"/api/v1/sandboxes/{a}/metrics"),
        ("GET", f"/api/v1/sandboxes/{a}/config"),
        ("DELETE", f"/api/v1/sandboxes/{a}"),
        ("GET", f"/api/v1/workspaces/{wid}/sandboxes"),
    ]:
        assert_error(
            await stack.client.request(method, path, headers=other.headers),
            404,
            "RESOURCE_NOT_FOUND",
        )
    r = await stack.client.put(
        f"/api/v1/sandboxes/{a}/config",
        headers=other.headers,
        json={"resources": {"memory_mb": 128}},
    )
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
    assert (await stack.get(acc, a))["status"] == "running"

    # Deleting the workspace removes its containers.
    assert (
        await stack.client.delete(f"/api/v1/workspaces/{wid}", headers=acc.headers)
    ).status_code == 204
    for sid in (a, b):
        assert not stack.docker.api.containers(all=True, filters={"name": container_name(sid)})


async def test_crashed_container_is_restarted(stack: Stack) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, sid, "running")
    await asyncio.to_thread(_container(stack, sid).kill)  # SIGKILL the init: the container dies
    recovered = await eventually(
        lambda: stack.get(acc, sid),
        lambda d: d["restart_count"] == 1 and d["status"] == "running",
        60,
        "an automatic restart",
    )
    assert (
        "exited with code" in (recovered["status_reason"] or "")
        or recovered["status_reason"] is None
    )
    assert _container(stack, sid).status == "running"
    metrics = (
        await stack.client.get(f"/api/v1/sandboxes/{sid}/metrics", headers=acc.headers)
    ).json()
    assert metrics["data"]["health"]["restart_count"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x"},
        {"name": "x", "agent_config": {}},
        {"name": "x", "agent_config": {"primary_agent": {"name": "a"}}},
        {
            "name": "x",
            "agent_config": {
                "primary_agent": {"name": "a", "role": "r"},
                "sub_agents": [{"name": "a", "role": "dup"}],
            },
        },
        {
            "name": "x",
            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
            "resources": {"memory_mb": 64},
        },
        {
            "name": "x",
            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
            "resources": {"cpu_cores": 32},
        },
        {
            "name": "x",
            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
            "resources": {"max_processes": 0},
        },
        {
            "name": "x",
            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
            "resources": {"timeout_seconds": 5},
        },
        {
            "name": "x",
            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
            "environment_variables": {"BAD-NAME": "v"},
        },
        {
            "name": "x",
            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
            "environment_variables": {"OK": "nul\x00"},
        },
        {
            "name": "x",
            "agent_config": {
                "primary_agent": {"name": "a", "role": "r", "system_prompt": "p" * 10001}
            },
        },
        {
            "name": "x",
            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
            "privileged": True,
        },
        {
            "name": "x",
            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
            "mcp_servers": ["not-configured"],
        },
    ],
)
async def test_create_rejects_bad_input_without_side_effects(
    stack: Stack, body: dict[str, Any]
) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    r = await stack.client.post(
        f"/api/v1/workspaces/{wid}/sandboxes", headers=acc.headers, json=body
    )
    assert_error(r, 422, "VALIDATION_ERROR")
    listed = (
        await stack.client.get(f"/api/v1/workspaces/{wid}/sandboxes", headers=acc.headers)
    ).json()
    assert listed["meta"]["total"] == 0


async def test_aggregate_metrics_over_real_samples(stack: Stack) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sids = [await stack.sandbox(acc, wid, name=n) for n in ("agg-a", "agg-b")]
    for sid in sids:
        await stack.wait_status(acc, sid, "running")

    async def fetch() -> dict[str, Any]:
        r = await stack.client.get(
            f"/api/v1/workspaces/{wid}/metrics/aggregate",
            headers=acc.headers,
            params={"granularity": "minute"},
        )
        assert r.status_code == 200, r.text
        return dict(r.json()["data"])

    data = await eventually(
        fetch,
        lambda d: (
            len(d["by_sandbox"]) == 2
            and all(sum(p["samples"] for p in s["series"]) >= 2 for s in d["by_sandbox"])
        ),
        30,
        "samples of both",
    )
    assert data["summary"]["total_sandboxes"] == 2 and data["summary"]["active_sandboxes"] == 2
    assert data["summary"]["avg_memory_usage"] > 0
    assert data["period"]["granularity"] == "minute" and data["period"]["start"].endswith("Z")
    names = {s["name"] for s in data["by_sandbox"]}
    assert names == {"agg-a", "agg-b"}
    point = data["by_sandbox"][0]["series"][-1]
    assert point["timestamp"].endswith(":00Z") and point["avg_memory_mb"] > 0
    day = (
        await stack.client.get(
            f"/api/v1/workspaces/{wid}/metrics/aggregate",
            headers=acc.headers,
            params={"granularity": "day"},
        )
    ).json()["data"]
    assert all(
        len(s["series"]) == 1 and s["series"][0]["timestamp"].endswith("T00:00:00Z")
        for s in day["by_sandbox"]
    )
    for params in (
        {"granularity": "week"},
        {"since": "not-a-date"},
        {"since": "2999-01-01T00:00:00Z"},
    ):
        assert_error(
            await stack.client.get(
                f"/api/v1/workspaces/{wid}/metrics/aggregate", headers=acc.headers, params=params
            ),
            422,
            "VALIDATION_ERROR",
        )
    for sid in sids:
        await stack.client.delete(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
