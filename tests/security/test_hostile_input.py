"""Hostile input gets a clean 4xx in the spec's envelope, never a 500 nor a stored time bomb,
on SQLite and PostgreSQL (api/input_guard.py, api/schemas/common.py, api/services/auth.py).

- JSON nested deeper than 32 levels: 422 naming the field (256 to 964 levels used to be accepted,
  then every listing containing the message answered 500).
- NaN / Infinity / -Infinity / 1e999 in a JSON body: 400 like any invalid JSON (they used to be
  stored and then sent bare on the WebSocket, which no JSON parser of a client accepts).
- Control characters in a query parameter (`?search=%00`): 422 naming it (PostgreSQL refuses NUL).
- NUL or a lone surrogate anywhere in a JSON body: 422 (PostgreSQL's text and JSONB cannot hold
  NUL; no driver can encode a lone surrogate).
- Names with bidi overrides, zero-width or control characters, or not in NFC: 422.
- A password registered composed (NFC) logs in typed decomposed (NFD): NFKC, per NIST 800-63B.

Temporal is stood in for where a message is sent (the API's connected client, as in
tests/api/test_message_accept.py); the delivery that publishes the message to the WebSocket
stream is the worker's real activity, and frames are encoded by the WebSocket's own encoder.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.messaging import MessagingActivities
from api.app import create_app
from api.events_bus import event_frame
from api.input_guard import MAX_JSON_DEPTH
from config.settings import Settings
from domain.ids import Prefix, new_id
from domain.messages import DeliveryBatch
from store.db import create_engine, session_factory
from store.models import Event, Message, Sandbox
from tests.conftest import Account, app_client, assert_error, new_account

pytestmark = pytest.mark.security


class AcceptingTemporal:
    """The API's connected Temporal client: every start (the inbox signal) is accepted."""

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Env:
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    account: Account
    workspace_id: str
    a: str
    b: str

    def send(self, content: Any) -> Any:
        return self.client.post(
            f"/api/v1/sandboxes/{self.a}/messages",
            headers=self.account.headers,
            json={"to_sandbox": self.b, "message_type": "notification", "content": content},
        )

    def raw(self, method: str, path: str, body: str, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers.update(self.account.headers)
        return self.client.request(method, path, headers=headers, content=body.encode())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(settings: Settings) -> AsyncIterator[Env]:
    app = create_app(settings)
    engine = create_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    try:
        async with app_client(app) as client:
            app.state.aintandem.temporal._client = AcceptingTemporal()
            acc = await new_account(client)
            r = await client.post("/api/v1/workspaces", headers=acc.headers, json={"name": "h"})
            assert r.status_code == 201, r.text
            wid = r.json()["data"]["workspace_id"]
            a, b = new_id(Prefix.SANDBOX), new_id(Prefix.SANDBOX)
            async with sessions() as s:
                for sid, name in ((a, "front"), (b, "back")):
                    s.add(Sandbox(id=sid, workspace_id=wid, name=name, status="running"))
                await s.commit()
            yield Env(client, sessions, acc, wid, a, b)
    finally:
        await engine.dispose()


def nested(levels: int) -> Any:
    """An object `levels` deep: {"d": {"d": ... {} }}."""
    value: Any = {}
    for _ in range(levels - 1):
        value = {"d": value}
    return value


def deep_text(levels: int) -> str:
    """The same as JSON text, built without Python's recursion (964 levels and beyond)."""
    return '{"d":' * (levels - 1) + "{}" + "}" * (levels - 1)


async def _listing_ok(env: Env) -> list[dict[str, Any]]:
    r = await env.client.get(
        f"/api/v1/sandboxes/{env.a}/messages?limit=1000", headers=env.account.headers
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]["messages"]  # type: ignore[no-any-return]


# -- nesting depth ---------------------------------------------------------------------------


async def test_content_nested_within_the_limit_is_accepted_and_listed(env: Env) -> None:
    # The body object is level 1, so `content` may be MAX_JSON_DEPTH - 1 levels deep.
    content = nested(MAX_JSON_DEPTH - 1)
    r = await env.send(content)
    assert r.status_code == 202, r.text
    listed = {m["message_id"]: m for m in await _listing_ok(env)}
    assert listed[r.json()["data"]["message_id"]]["content"] == content


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, 256, 600, 964, 5000])
async def test_content_nested_too_deep_is_refused(env: Env, levels: int) -> None:
    body = f'{{"to_sandbox":"{env.b}","content":{deep_text(levels)}}}'
    r = await env.raw("POST", f"/api/v1/sandboxes/{env.a}/messages", body)
    err = assert_error(r, 422, "VALIDATION_ERROR")
    fields = err["error"]["details"]["fields"]
    assert fields and fields[0]["field"] in ("content", "body"), fields
    if levels < 900:  # beyond ~1000 the parser itself gives up: the body is named
        assert fields[0]["field"] == "content"
    await _listing_ok(env)  # and nothing stored makes the listing fail


async def test_deep_json_is_refused_on_every_route(env: Env) -> None:
    """Not only message content: any JSON body (here a workspace update) is bounded."""
    body = json.dumps({"description": "x", "settings": nested(MAX_JSON_DEPTH)})
    r = await env.raw("PUT", f"/api/v1/workspaces/{env.workspace_id}", body)
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert err["error"]["details"]["fields"][0]["field"] == "settings"


async def test_deep_json_in_a_configuration_is_configuration_invalid(env: Env) -> None:
    """A configuration endpoint words the same refusal as its other ones (CONFIGURATION_INVALID)."""
    body = json.dumps({"llm_providers": [{"name": "qwen", "parameters": nested(MAX_JSON_DEPTH)}]})
    r = await env.raw("PUT", f"/api/v1/workspaces/{env.workspace_id}/config", body)
    err = assert_error(r, 422, "CONFIGURATION_INVALID")
    assert err["error"]["details"]["fields"][0]["field"] == "llm_providers"


# -- NaN and Infinity ------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
async def test_non_finite_numbers_are_refused(env: Env, token: str) -> None:
    send = f'{{"to_sandbox":"{env.b}","content":{{"x":[1,{{"y":{token}}}]}}}}'
    r = await env.raw("POST", f"/api/v1/sandboxes/{env.a}/messages", send)
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert err["error"]["details"]["fields"][0]["field"] == "content.x.1.y"

    patch = f'{{"settings":{{"resource_defaults":{{"cpu_cores":{token}}}}}}}'
    r = await env.raw("PUT", f"/api/v1/workspaces/{env.workspace_id}", patch)
    assert_error(r, 400, "VALIDATION_ERROR")

    register = (
        f'{{"email":"nan-{uuid.uuid4().hex[:8]}@example.com","password":"long enough 1",'
        f'"name":"N","organization":{token}}}'
    )
    r = await env.raw("POST", "/api/v1/auth/register", register, auth=False)
    assert_error(r, 400, "VALIDATION_ERROR")


async def test_no_bare_nan_reaches_a_websocket_frame(env: Env) -> None:
    """Whatever was sent, every message event of the workspace — delivered by the worker's own
    activity and encoded by the WebSocket's encoder — is strict JSON."""
    for token in ("NaN", "Infinity", "-Infinity"):
        body = f'{{"to_sandbox":"{env.b}","content":{{"reading":{token}}}}}'
        await env.raw("POST", f"/api/v1/sandboxes/{env.a}/messages", body)
    r = await env.send({"reading": 1.5})
    assert r.status_code == 202, r.text
    async with env.sessions() as s:
        queued = list(
            await s.scalars(
                select(Message.id).where(Message.to_sandbox_id == env.b, Message.status == "queued")
            )
        )
    outcome = await MessagingActivities(env.sessions).deliver(DeliveryBatch(env.b, queued))
    assert r.json()["data"]["message_id"] in outcome.delivered

    def strict(constant: str) -> Any:
        raise AssertionError(f"bare {constant} in a WebSocket frame")

    async with env.sessions() as s:
        rows = list(await s.scalars(select(Event).where(Event.workspace_id == env.workspace_id)))
    received = [row for row in rows if row.event == "message_received"]
    assert received
    for row in rows:
        json.loads(event_frame(row).text, parse_constant=strict)


# -- control characters in queries, NUL in bodies --------------------------------------------


@pytest.mark.parametrize("char", ["%00", "%01", "%0A", "%1B", "%7F"])
async def test_control_characters_in_a_search_are_refused(env: Env, char: str) -> None:
    for path in (
        "/api/v1/workspaces",
        f"/api/v1/workspaces/{env.workspace_id}/sandboxes",
    ):
        r = await env.client.get(f"{path}?search=ab{char}cd", headers=env.account.headers)
        err = assert_error(r, 422, "VALIDATION_ERROR")
        assert err["error"]["details"]["fields"][0]["field"] == "search"
        assert err["error"]["details"]["fields"][0]["location"] == "query"
    # Every other text filter too.
    for query in ("capability", "role", "sandbox_id"):
        r = await env.client.get(
            f"/api/v1/workspaces/{env.workspace_id}/agents/discover?{query}=x{char}",
            headers=env.account.headers,
        )
        assert_error(r, 422, "VALIDATION_ERROR")
    r = await env.client.get(
        f"/api/v1/sandboxes/{env.a}/messages?since=2025{char}", headers=env.account.headers
    )
    assert_error(r, 422, "VALIDATION_ERROR")


async def test_a_search_with_ordinary_text_still_works(env: Env) -> None:
    r = await env.client.get(
        "/api/v1/workspaces?search=%C3%A9t%C3%A9%20%25_", headers=env.account.headers
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/workspaces", {"name": "n", "description": "a\x00b"}, "description"),
        ("POST", "/auth/login", {"email": "a@b.co", "password": "p\x00w"}, "password"),
        ("SEND", "", {"task": {"deep": ["x", {"k\x00": 1}]}}, "content.task.deep.1.k\\u0000"),
        ("SEND", "", {"task": {"deep": ["x\x00"]}}, "content.task.deep.0"),
        # A lone surrogate is valid JSON syntax but no text: the drivers cannot encode it.
        ("POST", "/auth/login", {"email": "a\ud800@b.co", "password": "p"}, "email"),
        ("SEND", "", {"k": "x\udc00"}, "content.k"),
    ],
)
async def test_unstorable_text_in_a_json_body_is_refused(
    env: Env, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    if method == "SEND":
        method, path = "POST", f"/sandboxes/{env.a}/messages"
        body = {"to_sandbox": env.b, "content": body}
    # json.dumps escapes every non-ASCII character (\u0000, \ud800) as a client would.
    r = await env.raw(method, f"/api/v1{path}", json.dumps(body))
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert err["error"]["details"]["fields"][0]["field"] == field


# -- names -----------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "zero-width space": "dup\u200b",
    "bidi override": "invoice\u202egpj.exe",
    "bidi isolate": "a\u2066b",
    "zero-width joiner": "a\u200db",
    "byte order mark": "\ufeffname",
    "control": "tab\there",
    "escape": "red\x1b[31m",
    "line separator": "one\u2028two",
    "private use": "x\ue000",
    "decomposed (NFD)": unicodedata.normalize("NFD", "café"),
}


@pytest.mark.parametrize("kind", list(HOSTILE_NAMES))
async def test_hostile_names_are_refused(env: Env, kind: str) -> None:
    name = HOSTILE_NAMES[kind]
    r = await env.client.post(
        "/api/v1/workspaces", headers=env.account.headers, json={"name": name}
    )
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert err["error"]["details"]["fields"][0]["field"] == "name"

    r = await env.client.post(
        f"/api/v1/workspaces/{env.workspace_id}/sandboxes",
        headers=env.account.headers,
        json={"name": name, "agent_config": {"primary_agent": {"name": "a", "role": "r"}}},
    )
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert err["error"]["details"]["fields"][0]["field"] == "name"

    r = await env.client.post(
        f"/api/v1/workspaces/{env.workspace_id}/sandboxes",
        headers=env.account.headers,
        json={"name": "ok", "agent_config": {"primary_agent": {"name": name, "role": "r"}}},
    )
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert err["error"]["details"]["fields"][0]["field"] == "agent_config.primary_agent.name"

    r = await env.client.post(
        "/api/v1/auth/register",
        json={"email": f"n-{uuid.uuid4().hex[:8]}@example.com", "password": "x" * 12, "name": name},
    )
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert err["error"]["details"]["fields"][0]["field"] == "name"


async def test_names_that_only_differ_invisibly_cannot_coexist(env: Env) -> None:
    r = await env.client.post(
        "/api/v1/workspaces", headers=env.account.headers, json={"name": "dup"}
    )
    assert r.status_code == 201, r.text
    r = await env.client.post(
        "/api/v1/workspaces", headers=env.account.headers, json={"name": "dup\u200b"}
    )
    assert_error(r, 422, "VALIDATION_ERROR")
    # Letters of any script, spaces, punctuation and emoji are names like any other.
    for name in ("Équipe Été", "Команда", "开发团队", "team 🚀", "O'Brien & Co."):
        r = await env.client.post(
            "/api/v1/workspaces", headers=env.account.headers, json={"name": name}
        )
        assert r.status_code == 201, (name, r.text)
        assert r.json()["data"]["name"] == name


# -- passwords -------------------------------------------------------------------------------


async def test_a_password_set_composed_logs_in_typed_decomposed(env: Env) -> None:
    email = f"nfkc-{uuid.uuid4().hex[:8]}@example.com"
    composed = unicodedata.normalize("NFC", "Ünïcödé pässwörd ñ")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    r = await env.client.post(
        "/api/v1/auth/register", json={"email": email, "password": composed, "name": "U"}
    )
    assert r.status_code == 201, r.text
    for typed in (decomposed, composed):
        r = await env.client.post("/api/v1/auth/login", json={"email": email, "password": typed})
        assert r.status_code == 200, r.text
    r = await env.client.post(
        "/api/v1/auth/login", json={"email": email, "password": composed + "x"}
    )
    assert_error(r, 401, "AUTHENTICATION_FAILED")


async def test_a_password_hashed_before_normalisation_still_logs_in(env: Env) -> None:
    """An account whose decomposed password was hashed as typed (before NFKC) keeps working,
    in either form, and is moved to the normalised hash on its first login."""
    from api.security import hash_password
    from store.models import User

    email = f"legacy-{uuid.uuid4().hex[:8]}@example.com"
    decomposed = unicodedata.normalize("NFD", "Ünïcödé pässwörd")
    r = await env.client.post(
        "/api/v1/auth/register", json={"email": email, "password": "placeholder-1", "name": "L"}
    )
    assert r.status_code == 201, r.text
    async with env.sessions() as s:
        user = await s.scalar(select(User).where(User.email == email))
        assert user is not None
        user.password_hash = hash_password(decomposed)  # what the old code stored
        await s.commit()
    for typed in (decomposed, unicodedata.normalize("NFC", decomposed)):
        r = await env.client.post("/api/v1/auth/login", json={"email": email, "password": typed})
        assert r.status_code == 200, r.text
