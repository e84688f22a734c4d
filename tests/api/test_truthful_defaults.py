"""Defaults that tell the truth (issue 14, item 8): the workspace config names the model agents
really get (the embedded one when no provider is configured, not `qwen`), and `max_sandboxes`
above the edition's limit is refused with the limit in the message instead of being capped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from api.app import create_app
from tests.conftest import app_client, assert_error, make_settings, new_account

API = "/api/v1"
LIMIT = 3


@pytest_asyncio.fixture(loop_scope="session")
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """An app whose edition allows 3 sandboxes per workspace and serves the tiny model."""
    settings = make_settings(
        database_url, tmp_path, max_sandboxes_per_workspace=LIMIT, offline_model="smollm2"
    )
    async with app_client(create_app(settings)) as client:
        acc = await new_account(client)
        yield client, acc


async def _workspace(client: httpx.AsyncClient, acc: Any, **settings: Any) -> httpx.Response:
    body: dict[str, Any] = {"name": "truth"}
    if settings:
        body["settings"] = settings
    return await client.post(f"{API}/workspaces", headers=acc.headers, json=body)


async def test_no_provider_means_the_offline_model(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, acc = api
    wid = (await _workspace(client, acc)).json()["data"]["workspace_id"]
    data = (await client.get(f"{API}/workspaces/{wid}/config", headers=acc.headers)).json()["data"]
    assert data["effective_llm"]["provider"] == "offline"
    assert data["effective_llm"]["model"] == "smollm2-135m-instruct"  # AINTANDEM_OFFLINE_MODEL
    assert data["effective_llm"]["source"] == "offline"
    # The spec's fields are still there, unchanged in meaning (the preference, not the truth).
    assert data["settings"]["default_llm_provider"] == "qwen"
    # /system/info names the same model for the same case.
    info = (await client.get(f"{API}/system/info")).json()["data"]
    assert info["offline_llm"]["model"] == data["effective_llm"]["model"]
    assert info["offline_llm"]["provider"] == data["effective_llm"]["provider"]


async def test_a_configured_provider_is_the_effective_one(
    api: tuple[httpx.AsyncClient, Any],
) -> None:
    client, acc = api
    wid = (await _workspace(client, acc)).json()["data"]["workspace_id"]
    url = f"{API}/workspaces/{wid}/config"
    claude = {"name": "claude", "api_key": "sk-x", "models": ["claude-a", "claude-b"]}
    r = await client.put(url, headers=acc.headers, json={"llm_providers": [claude]})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["effective_llm"] | {"reason": None} == {
        "provider": "claude",
        "model": "claude-a",
        "source": "only_provider",
        "reason": None,
    }
    qwen = {"name": "qwen", "api_key": "sk-y", "default_model": "qwen-max"}
    r = await client.put(url, headers=acc.headers, json={"llm_providers": [claude, qwen]})
    assert r.json()["data"]["effective_llm"]["provider"] == "qwen"  # the default, configured
    assert r.json()["data"]["effective_llm"]["model"] == "qwen-max"
    assert r.json()["data"]["effective_llm"]["source"] == "default_llm_provider"
    # Two providers and a default that is neither: the worker falls back to the offline model.
    r = await client.put(
        url, headers=acc.headers, json={"settings": {"default_llm_provider": "glm"}}
    )
    assert r.json()["data"]["effective_llm"]["provider"] == "offline"
    assert "'glm' is not configured" in r.json()["data"]["effective_llm"]["reason"]
    got = (await client.get(url, headers=acc.headers)).json()["data"]
    assert got["effective_llm"] == r.json()["data"]["effective_llm"]


async def test_the_default_max_sandboxes_fits_the_edition(
    api: tuple[httpx.AsyncClient, Any],
) -> None:
    client, acc = api
    created = (await _workspace(client, acc)).json()["data"]
    assert created["settings"]["max_sandboxes"] == LIMIT


async def test_max_sandboxes_above_the_edition_limit_is_refused(
    api: tuple[httpx.AsyncClient, Any],
) -> None:
    client, acc = api

    def check(r: httpx.Response) -> None:
        body = assert_error(r, 422, "VALIDATION_ERROR")
        assert f"limit of {LIMIT} sandboxes per workspace" in body["error"]["message"]
        assert body["error"]["details"]["limit"] == LIMIT
        assert body["error"]["details"]["fields"][0]["field"] == "settings.max_sandboxes"

    check(await _workspace(client, acc, max_sandboxes=LIMIT + 1))
    ok = await _workspace(client, acc, max_sandboxes=LIMIT)  # the limit itself is fine
    assert ok.status_code == 201, ok.text
    wid = ok.json()["data"]["workspace_id"]
    check(
        await client.put(
            f"{API}/workspaces/{wid}",
            headers=acc.headers,
            json={"name": "renamed", "settings": {"max_sandboxes": 50}},
        )
    )
    check(
        await client.put(
            f"{API}/workspaces/{wid}/config",
            headers=acc.headers,
            json={"settings": {"max_sandboxes": LIMIT + 1}},
        )
    )
    # Nothing of the refused requests was stored.
    detail = (await client.get(f"{API}/workspaces/{wid}", headers=acc.headers)).json()["data"]
    assert detail["name"] == "truth" and detail["settings"]["max_sandboxes"] == LIMIT
    lowered = await client.put(
        f"{API}/workspaces/{wid}/config",
        headers=acc.headers,
        json={"settings": {"max_sandboxes": 1}},
    )
    assert lowered.status_code == 200 and lowered.json()["data"]["settings"]["max_sandboxes"] == 1


@pytest.mark.parametrize("value", [0, 1001, "many"])
async def test_out_of_range_max_sandboxes_stays_a_field_error(
    api: tuple[httpx.AsyncClient, Any], value: Any
) -> None:
    client, acc = api
    body = assert_error(await _workspace(client, acc, max_sandboxes=value), 422, "VALIDATION_ERROR")
    assert body["error"]["details"]["fields"][0]["field"] == "settings.max_sandboxes"
