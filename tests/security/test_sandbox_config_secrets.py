"""Saving a sandbox's config back unchanged keeps its secrets (issue #13, item 4).

`GET /sandboxes/{id}/config` masks secret-looking environment values as `********`. A client
that edits one field and PUTs the rest back as it read it must not replace the secrets with the
mask: the mask for an existing variable means "keep the stored value" (as the workspace config
does for provider keys), and a mask for a variable with no stored value is refused (it is not a
value). Checked where it matters, on the real stack: the stored row, and the environment of the
sandbox's process after a restart re-creates its container.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import docker.errors
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.containers import container_name
from store.models import Sandbox
from tests.conftest import Account, assert_error
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    Stack,
    _delete_test_workspaces,
    eventually,
    stack,
)

pytestmark = [pytest.mark.security, pytest.mark.docker, pytest.mark.temporal]

MASK = "********"


async def _running_sandbox(live: Stack, acc: Account, env: dict[str, str]) -> str:
    wid = await live.workspace(acc)
    sid = await live.sandbox(acc, wid, environment_variables=env)
    await live.wait_status(acc, sid, "running")
    return sid


async def _config(live: Stack, acc: Account, sid: str) -> dict[str, Any]:
    r = await live.client.get(f"/api/v1/sandboxes/{sid}/config", headers=acc.headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


async def _put(live: Stack, acc: Account, sid: str, body: dict[str, Any]) -> Any:
    return await live.client.put(f"/api/v1/sandboxes/{sid}/config", headers=acc.headers, json=body)


async def _stored_env(db: async_sessionmaker[AsyncSession], sid: str) -> dict[str, str]:
    async with db() as s:
        sb = await s.get(Sandbox, sid)
        assert sb is not None
        return dict(sb.environment_variables)


def _started(live: Stack, sid: str) -> tuple[str, str] | None:
    """The running container's id and start time (a restart changes the time; a changed
    environment also re-creates the container, which changes the id)."""
    try:
        container = live.docker.containers.get(container_name(sid))
    except docker.errors.NotFound:
        return None
    if container.status != "running":
        return None
    return str(container.id), str(container.attrs["State"]["StartedAt"])


async def _restart(live: Stack, acc: Account, sid: str) -> None:
    """Restart and wait until the sandbox runs in a container started after it."""
    before = await asyncio.to_thread(_started, live, sid)
    r = await live.client.post(f"/api/v1/sandboxes/{sid}/restart", headers=acc.headers)
    assert r.status_code == 202, r.text
    await eventually(
        lambda: asyncio.to_thread(_started, live, sid),
        lambda now: now is not None and now != before,
        90,
        "the restarted container",
    )
    await live.wait_status(acc, sid, "running")


def _process_env(live: Stack, sid: str, name: str) -> str:
    """The variable as the sandbox's processes see it (not the container's config)."""
    container = live.docker.containers.get(container_name(sid))
    result = container.exec_run(["printenv", name])
    assert result.exit_code == 0, result.output
    return str(result.output.decode().strip())


async def test_config_saved_back_unchanged_keeps_the_secret(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
    db: async_sessionmaker[AsyncSession],
) -> None:
    acc = await stack.account()
    secret = f"s3cret-{uuid.uuid4().hex}"
    sid = await _running_sandbox(stack, acc, {"API_TOKEN": secret, "NODE_ENV": "development"})
    assert await asyncio.to_thread(_process_env, stack, sid, "API_TOKEN") == secret

    read = await _config(stack, acc, sid)
    assert read["environment_variables"] == {"API_TOKEN": MASK, "NODE_ENV": "development"}
    body = {k: read[k] for k in ("agent_config", "resources", "mcp_servers")}
    body["environment_variables"] = read["environment_variables"]
    r = await _put(stack, acc, sid, body)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["environment_variables"]["API_TOKEN"] == MASK
    assert await _stored_env(db, sid) == {"API_TOKEN": secret, "NODE_ENV": "development"}

    # The environment applies at the next (re)start, which re-creates the container.
    await _restart(stack, acc, sid)
    assert await asyncio.to_thread(_process_env, stack, sid, "API_TOKEN") == secret


async def test_mask_keeps_only_what_exists_and_edits_still_apply(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
    db: async_sessionmaker[AsyncSession],
) -> None:
    acc = await stack.account()
    secret = f"s3cret-{uuid.uuid4().hex}"
    sid = await _running_sandbox(stack, acc, {"API_TOKEN": secret, "NODE_ENV": "development"})
    before = await _stored_env(db, sid)

    # A mask for a variable that has no stored value is not a value: refused, nothing changed.
    body = assert_error(
        await _put(
            stack,
            acc,
            sid,
            {
                "environment_variables": {
                    "API_TOKEN": MASK,
                    "NODE_ENV": "production",
                    "DB_PASSWORD": MASK,
                }
            },
        ),
        422,
        "CONFIGURATION_INVALID",
    )
    fields = body["error"]["details"]["fields"]
    assert [f["field"] for f in fields] == ["environment_variables.DB_PASSWORD"]
    assert await _stored_env(db, sid) == before

    # Editing one variable while sending the other back masked: the edit applies, the secret
    # stays; a variable left out is removed (the map replaces the stored one).
    r = await _put(
        stack,
        acc,
        sid,
        {"environment_variables": {"API_TOKEN": MASK, "NODE_ENV": "production", "NEW": "v"}},
    )
    assert r.status_code == 200, r.text
    assert await _stored_env(db, sid) == {
        "API_TOKEN": secret,
        "NODE_ENV": "production",
        "NEW": "v",
    }
    r = await _put(stack, acc, sid, {"environment_variables": {"API_TOKEN": "rotated"}})
    assert r.status_code == 200, r.text
    assert await _stored_env(db, sid) == {"API_TOKEN": "rotated"}
    await _restart(stack, acc, sid)
    assert await asyncio.to_thread(_process_env, stack, sid, "API_TOKEN") == "rotated"


async def test_the_body_get_returns_can_be_put_back_as_it_is(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
    db: async_sessionmaker[AsyncSession],
) -> None:
    acc = await stack.account()
    secret = f"s3cret-{uuid.uuid4().hex}"
    env = {"API_TOKEN": secret, "NODE_ENV": "development"}
    sid = await _running_sandbox(stack, acc, env)
    other = await _running_sandbox(stack, acc, {})

    # The literal round trip: the read-only fields (sandbox_id, applied) come back too.
    read = await _config(stack, acc, sid)
    assert {"sandbox_id", "applied"} <= read.keys()
    r = await _put(stack, acc, sid, read)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["environment_variables"]["API_TOKEN"] == MASK
    assert await _stored_env(db, sid) == env
    # Nothing changed: every resource (there were none) applied, nothing waits.
    assert r.json()["data"]["applied"]["resources"] == "live"
    again = r.json()["data"]  # a PUT's answer is a config body too
    r = await _put(stack, acc, sid, again)
    assert r.status_code == 200, r.text
    assert await _stored_env(db, sid) == env

    # Read-only means read-only: another sandbox's id is refused, nothing changes; any other
    # unknown field is still refused.
    for body, field in (
        ({**read, "sandbox_id": other, "mcp_servers": []}, "sandbox_id"),
        ({**read, "status": "running"}, "status"),
    ):
        err = assert_error(await _put(stack, acc, sid, body), 422, "CONFIGURATION_INVALID")
        assert [f["field"] for f in err["error"]["details"]["fields"]] == [field], err
    assert (await _config(stack, acc, sid))["mcp_servers"] == read["mcp_servers"]

    # `applied` tells the truth: limits apply to the running container, the disk size only
    # when the next start re-creates it.
    memory = read["resources"]["memory_mb"] + 128
    r = await _put(stack, acc, sid, {"resources": {"memory_mb": memory}})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["applied"] == {
        "resources": "live",
        "resources.memory_mb": "live",
    }
    disk = read["resources"]["disk_mb"] + 64
    r = await _put(stack, acc, sid, {"resources": {"disk_mb": disk, "memory_mb": memory + 128}})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["applied"] == {
        "resources": "next_start",
        "resources.disk_mb": "next_start",
        "resources.memory_mb": "live",
    }
