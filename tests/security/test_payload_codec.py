"""Secrets in Temporal: workflow histories hold no plaintext secret, and the codec server that
lets operators read them anyway is admins-only.

The attack: anyone who reaches the Temporal server (`temporal workflow show`) or its UI (no
login of its own; its HTTP API answers anyone) reads workflow histories. Before the payload
codec, a sandbox's environment variables and a workspace's literal provider key were there in
plain text. `test_secrets_never_reach_temporal_in_plain_text[control-plaintext]` runs the same
flow with `payload_encryption` off and finds both secrets: the check can fail, and fails
without the codec.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import default
from temporalio.worker import Replayer

from api.app import create_app
from cli.up import codec_endpoint, temporal_command, wait_for_port
from config.payload_codec import ENCODING, KEY_ID, EncryptionCodec, data_converter, key_id
from config.settings import Settings
from domain.containers import container_name
from store.db import create_engine, session_factory
from store.migrate import upgrade
from tests.cleanup import remove_installation_sandboxes
from tests.conftest import (
    Account,
    app_client,
    assert_error,
    make_settings,
    new_account,
    temporal_cli,
)
from tests.integration.conftest import eventually
from tests.live_stack import free_port
from tests.unit.test_llm_providers import FakeProvider, Scripted, fake_server, openai_reply
from worker.main import build_activities, build_worker
from workflows.inbox import InboxWorkflow
from workflows.message_delivery import MessageDeliveryWorkflow
from workflows.sandbox import SandboxWorkflow

pytestmark = pytest.mark.security
__all__ = ["fake_server"]  # the loopback LLM provider fixture

CODEC = "/api/v1/codec"
UI_ORIGIN = "http://127.0.0.1:8233"  # the embedded UI's origin (temporal_ui_port's default)
EVIL_ORIGIN = "http://127.0.0.1:8666"
PASSWORD = "correct horse battery"


# -- the codec server (API only, both database backends) ---------------------------------------


@dataclass
class CodecApi:
    client: httpx.AsyncClient
    settings: Settings
    admin: Account
    user: Account

    @property
    def worker_converter(self) -> Any:
        """What a worker of this installation encodes with (same data dir, so same key)."""
        return data_converter(self.settings)


async def _account(client: httpx.AsyncClient, email: str) -> Account:
    r = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "Ops"}
    )
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    return Account(
        data["user"]["user_id"], email, PASSWORD, data["access_token"], data["refresh_token"]
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def codec_api(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CodecApi]:
    admin_email = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    settings = make_settings(
        database_url, tmp_path_factory.mktemp("codec"), admin_emails=[admin_email]
    )
    async with app_client(create_app(settings)) as client:
        admin = await _account(client, admin_email)
        user = await new_account(client, "Not An Admin")
        yield CodecApi(client, settings, admin, user)


def _body(payloads: list[Payload]) -> dict[str, Any]:
    """Temporal's codec-server JSON, as the UI and the CLI send it."""
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def _parse(body: dict[str, Any]) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in body["payloads"]]


def _bearer(acc: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {acc.access_token}", "X-Namespace": "default"}


async def test_an_admin_decodes_what_the_worker_encrypted(codec_api: CodecApi) -> None:
    secret = f"env-secret-{uuid.uuid4().hex}"
    dc = codec_api.worker_converter
    sealed = await dc.encode([{"TOKEN": secret}, "second"])
    assert all(p.metadata["encoding"] == ENCODING for p in sealed)
    r = await codec_api.client.post(
        f"{CODEC}/decode", json=_body(sealed), headers=_bearer(codec_api.admin)
    )
    assert r.status_code == 200, r.text
    assert secret in base64.b64decode(r.json()["payloads"][0]["data"]).decode()
    assert await dc.decode(_parse(r.json()), [dict, str]) == [{"TOKEN": secret}, "second"]
    # Plaintext payloads (histories from before encryption) come back as they are.
    plain = default().payload_converter.to_payloads(["old", 1])
    r = await codec_api.client.post(
        f"{CODEC}/decode", json=_body(plain), headers=_bearer(codec_api.admin)
    )
    assert r.status_code == 200 and _parse(r.json()) == plain


async def test_encode_gives_what_the_worker_decrypts(codec_api: CodecApi) -> None:
    """The UI encodes signal and start inputs it sends; the worker must read them."""
    plain = default().payload_converter.to_payloads([{"task": "from the UI"}])
    r = await codec_api.client.post(
        f"{CODEC}/encode", json=_body(plain), headers=_bearer(codec_api.admin)
    )
    assert r.status_code == 200, r.text
    (sealed,) = _parse(r.json())
    assert sealed.metadata["encoding"] == ENCODING and b"from the UI" not in sealed.data
    assert await codec_api.worker_converter.decode([sealed], [dict]) == [{"task": "from the UI"}]


@pytest.mark.parametrize("route", ["decode", "encode"])
async def test_a_normal_user_is_forbidden_and_anonymous_is_unauthenticated(
    codec_api: CodecApi, route: str
) -> None:
    sealed = await codec_api.worker_converter.encode(["nothing for you"])
    c, url, body = codec_api.client, f"{CODEC}/{route}", _body(sealed)
    r = await c.post(url, json=body, headers=_bearer(codec_api.user))
    assert "nothing for you" not in r.text
    assert_error(r, 403, "AUTHORIZATION_FAILED")
    assert_error(await c.post(url, json=body), 401, "AUTHENTICATION_FAILED")
    forged = {"Authorization": "Bearer not-a-token"}
    assert_error(await c.post(url, json=body, headers=forged), 401, "AUTHENTICATION_FAILED")
    # A normal user's token in the cookie does not make them an admin either.
    cookie = {"Cookie": f"aintandem_codec={codec_api.user.access_token}"}
    assert_error(await c.post(url, json=body, headers=cookie), 403, "AUTHORIZATION_FAILED")


def _codec_cookie(r: httpx.Response) -> tuple[str, Any]:
    jar: SimpleCookie = SimpleCookie()
    jar.load(r.headers["set-cookie"])
    morsel = jar["aintandem_codec"]
    return morsel.value, morsel


async def test_the_browser_session_cookie_lets_the_ui_decode(codec_api: CodecApi) -> None:
    """The Temporal UI has no login: the admin signs in on the API once, the cookie (HttpOnly,
    SameSite=Strict, only sent to the codec routes) authenticates the UI's fetches, which must
    come from the UI's origin."""
    c = codec_api.client
    assert_error(await c.post(f"{CODEC}/session"), 401, "AUTHENTICATION_FAILED")
    r = await c.post(f"{CODEC}/session", headers=_bearer(codec_api.user))
    assert_error(r, 403, "AUTHORIZATION_FAILED")
    assert "set-cookie" not in r.headers
    # A session of its own: logging it out at the end must not end the fixture's admin session.
    admin = await _account_login(c, codec_api.admin.email)
    r = await c.post(f"{CODEC}/session", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    value, morsel = _codec_cookie(r)
    assert value == admin
    assert morsel["httponly"] and morsel["samesite"].lower() == "strict"
    assert morsel["path"] == CODEC and 0 < int(morsel["max-age"]) <= 3600
    c.cookies.clear()  # sent explicitly below, as the browser would for the codec path

    secret = f"seen-in-the-ui-{uuid.uuid4().hex}"
    body = _body(await codec_api.worker_converter.encode([secret]))
    ui = {"Cookie": f"aintandem_codec={value}", "Origin": UI_ORIGIN, "X-Namespace": "default"}
    r = await c.post(f"{CODEC}/decode", json=body, headers=ui)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == UI_ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    assert secret in base64.b64decode(r.json()["payloads"][0]["data"]).decode()
    # The same cookie ridden by another page (same site, other port): refused, and no CORS
    # headers, so that page could not read an answer anyway.
    r = await c.post(f"{CODEC}/decode", json=body, headers={**ui, "Origin": EVIL_ORIGIN})
    assert_error(r, 403, "AUTHORIZATION_FAILED")
    assert "access-control-allow-origin" not in r.headers and secret not in r.text
    # The cookie is the session: after a logout it opens nothing.
    r = await c.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code in (200, 204), r.text
    r = await c.post(f"{CODEC}/decode", json=body, headers=ui)
    assert_error(r, 401, "AUTHENTICATION_FAILED")
    assert r.headers["access-control-allow-origin"] == UI_ORIGIN  # the UI can read the 401
    r = await c.delete(f"{CODEC}/session")
    assert r.status_code == 204 and 'aintandem_codec=""' in r.headers["set-cookie"]


async def _account_login(c: httpx.AsyncClient, email: str) -> str:
    r = await c.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["access_token"])


@pytest.mark.parametrize("route", ["decode", "encode"])
async def test_cors_preflight_allows_only_the_ui_origin(codec_api: CodecApi, route: str) -> None:
    c = codec_api.client
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    r = await c.options(f"{CODEC}/{route}", headers={**asked, "Origin": UI_ORIGIN})
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == UI_ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-namespace", "authorization"} <= allowed
    r = await c.options(f"{CODEC}/{route}", headers={**asked, "Origin": EVIL_ORIGIN})
    assert_error(r, 403, "AUTHORIZATION_FAILED")
    assert not [h for h in r.headers if h.startswith("access-control-")]
    # An admin's own token does not make another origin acceptable either.
    body = _body(await codec_api.worker_converter.encode(["x"]))
    r = await c.post(
        f"{CODEC}/{route}", json=body, headers={**_bearer(codec_api.admin), "Origin": EVIL_ORIGIN}
    )
    assert_error(r, 403, "AUTHORIZATION_FAILED")
    # Only the codec routes answer CORS: the rest of the API is not opened to the UI's origin.
    r = await c.options("/api/v1/workspaces", headers={**asked, "Origin": UI_ORIGIN})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{not json", 400),
        (b"[]", 422),
        (b'{"payloads": "x"}', 422),
        (b'{"payloads": [5]}', 422),
        (b'{"payloads": [{"metadata": {"encoding": "a"}}]}', 422),
        (b'{"payloads": [{"data": 3}]}', 422),
    ],
)
async def test_bad_bodies_get_a_clean_4xx(codec_api: CodecApi, content: bytes, status: int) -> None:
    headers = {**_bearer(codec_api.admin), "content-type": "application/json"}
    for route in ("decode", "encode"):
        r = await codec_api.client.post(f"{CODEC}/{route}", content=content, headers=headers)
        assert_error(r, status, "VALIDATION_ERROR")


async def test_a_payload_of_an_unknown_key_fails_clearly(codec_api: CodecApi) -> None:
    lost = secrets.token_bytes(32)
    sealed = await EncryptionCodec([lost]).encode(default().payload_converter.to_payloads(["x"]))
    r = await codec_api.client.post(
        f"{CODEC}/decode", json=_body(sealed), headers=_bearer(codec_api.admin)
    )
    body = assert_error(r, 422, "CONFIGURATION_INVALID")
    assert key_id(lost) in body["error"]["message"]
    assert body["error"]["details"]["index"] == 0


async def test_the_sign_in_page_runs_only_its_own_script(codec_api: CodecApi) -> None:
    r = await codec_api.client.get(f"{CODEC}/login")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    (script,) = re.findall(r"<script>(.*?)</script>", r.text, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp  # the browser would run it, and nothing injected


# -- histories on a real Temporal server (the one `aintandem up` starts) and a real worker ----


@dataclass
class TemporalUI:
    address: str
    ui: str
    codec_endpoint: str


@pytest.fixture(scope="module")
def temporal_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalUI]:
    """The dev server exactly as `aintandem up` runs it (cli.up.temporal_command), UI on."""
    data_dir = tmp_path_factory.mktemp("temporal-ui")
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        temporal_port=free_port(),
        temporal_ui_port=free_port(),
        api_port=free_port(),
    )
    log = (data_dir / "temporal.log").open("wb")
    proc = subprocess.Popen(
        temporal_command(settings), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_port("127.0.0.1", settings.temporal_port, 60, proc)
        wait_for_port("127.0.0.1", settings.temporal_ui_port, 60, proc)
        yield TemporalUI(
            f"127.0.0.1:{settings.temporal_port}",
            f"http://127.0.0.1:{settings.temporal_ui_port}",
            codec_endpoint(settings),
        )
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@contextlib.asynccontextmanager
async def platform(settings: Settings, client: Client) -> AsyncIterator[httpx.AsyncClient]:
    """The worker (in-process, handed a client WITHOUT the codec, as tests and benchmarks do:
    it must still encrypt) and the API."""
    engine = create_engine(settings.resolved_database_url)
    activities = build_activities(settings, session_factory(engine), client)
    try:
        with ThreadPoolExecutor(64) as pool:
            async with (
                build_worker(client, settings, pool, activities),
                app_client(create_app(settings)) as api,
            ):
                yield api
    finally:
        await activities.aclose()
        await engine.dispose()


def _strings_and_base64(node: Any) -> Iterator[bytes]:
    """Every string of a JSON document, and what it decodes to when it is base64 (how Temporal's
    HTTP API and UI carry payload bytes)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings_and_base64(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings_and_base64(value)
    elif isinstance(node, str):
        yield node.encode()
        with contextlib.suppress(binascii.Error, ValueError):
            yield base64.b64decode(node, validate=True)


@pytest.mark.docker
@pytest.mark.temporal
@pytest.mark.parametrize("encryption", [True, False], ids=["encrypted", "control-plaintext"])
async def test_secrets_never_reach_temporal_in_plain_text(
    encryption: bool, temporal_ui: TemporalUI, tmp_path: Path, fake_server: FakeProvider
) -> None:
    """A sandbox with an environment-variable secret and a workspace with a literal provider
    key, both carried through Temporal (the sandbox's start input; the agent turn's provider
    config), then every history read raw: over gRPC without the codec (`temporal workflow
    show`) and over the Temporal UI's HTTP API. One SQLite database: the backend is irrelevant."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'aintandem.db'}"
    await asyncio.to_thread(upgrade, database_url)
    admin_email = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    settings = make_settings(
        database_url,
        tmp_path,
        admin_emails=[admin_email],
        temporal_address=temporal_ui.address,
        task_queue=f"codec-{uuid.uuid4().hex[:8]}",
        sandbox_health_interval_seconds=1.0,
        payload_encryption=encryption,
    )
    planted = {
        "environment variable": f"env-secret-{uuid.uuid4().hex}",
        "provider api_key": f"sk-literal-{uuid.uuid4().hex}",
    }
    env_secret, api_key = planted.values()
    fake = fake_server
    fake.reset()
    fake.responder = lambda _body: _scripted_reply()
    raw = await Client.connect(temporal_ui.address)  # no codec: what an outsider reads
    workspaces: list[str] = []
    try:
        ids, mid = await _plant_secrets(settings, raw, fake, env_secret, api_key, workspaces)
    finally:
        # Whatever failed: no sandbox (container, disk, network) left behind.
        remove_installation_sandboxes(settings.installation_id, workspace_ids=workspaces)

    workflow_ids = [f"sandbox-{ids[0]}", f"sandbox-{ids[1]}", f"inbox-{ids[1]}", f"message-{mid}"]
    histories = {w: await raw.get_workflow_handle(w).fetch_history() for w in workflow_ids}
    grpc = {
        w: b"".join(e.SerializeToString() for e in history.events)
        for w, history in histories.items()
    }
    async with httpx.AsyncClient(base_url=temporal_ui.ui, timeout=30) as ui:
        settings_page = (await ui.get("/api/v1/settings")).json()
        via_ui = {}
        for w in workflow_ids:
            r = await ui.get(f"/api/v1/namespaces/default/workflows/{w}/history")
            assert r.status_code == 200, r.text
            assert r.json()["history"]["events"], w
            via_ui[w] = b"\n".join(_strings_and_base64(r.json()))
    # The UI is told where to decode (cli.up passes --ui-codec-endpoint).
    assert settings_page["Codec"]["Endpoint"] == temporal_ui.codec_endpoint

    leaks = sorted(
        f"{what} in {w} ({where})"
        for where, blobs in (("gRPC history", grpc), ("UI HTTP API", via_ui))
        for w, blob in blobs.items()
        for what, secret in planted.items()
        if secret.encode() in blob
    )
    if not encryption:
        # The control: without the codec both secrets are there for anyone to read.
        assert any("environment variable" in leak for leak in leaks), leaks
        assert any("provider api_key" in leak for leak in leaks), leaks
        return
    assert not leaks, leaks
    # Encrypted under this installation's key, and the histories replay on the worker's
    # data converter (and not without it).
    payloads = [
        p for h in histories.values() for e in h.events for p in _event_payloads(e) if p.metadata
    ]
    plain = [p for p in payloads if p.metadata.get("encoding") != ENCODING]
    assert payloads and not plain, plain
    assert {p.metadata[KEY_ID] for p in payloads} == {key_id(settings.payload_keys()[0]).encode()}
    replayer = Replayer(
        workflows=[SandboxWorkflow, InboxWorkflow, MessageDeliveryWorkflow],
        data_converter=data_converter(settings),
    )
    for history in histories.values():
        await replayer.replay_workflow(history)
    with pytest.raises(Exception, match=r"(?i)encod|decod|payload"):
        await Replayer(workflows=[SandboxWorkflow]).replay_workflow(histories[f"sandbox-{ids[0]}"])
    # Operators still read them: the real Temporal CLI decodes through the API's codec server,
    # with an admin's token; with a normal user's it gets nothing.
    shown = await _temporal_show(settings, f"sandbox-{ids[0]}", admin_email)
    assert env_secret in shown["admin"], shown["admin"][-2000:]
    assert env_secret not in shown["user"]


async def _plant_secrets(
    settings: Settings,
    raw: Client,
    fake: FakeProvider,
    env_secret: str,
    api_key: str,
    workspaces: list[str],
) -> tuple[list[str], str]:
    """The platform carries both secrets through Temporal: a sandbox started with the
    environment variable, an agent turn on the workspace's provider (prepared config, then the
    LLM call). Returns the two sandboxes and the message; the workspace id goes to `workspaces`
    as soon as it exists, for the caller's cleanup."""
    async with platform(settings, raw) as api:
        acc = await new_account(api)
        h = acc.headers
        r = await api.post(
            "/api/v1/workspaces",
            headers=h,
            json={"name": "codec", "settings": {"default_llm_provider": "openai"}},
        )
        wid = r.json()["data"]["workspace_id"]
        workspaces.append(wid)
        provider = {
            "name": "openai",
            "api_key": api_key,
            "base_url": f"{fake.base}/v1",
            "models": ["gpt-test"],
            "default_model": "gpt-test",
        }
        r = await api.put(
            f"/api/v1/workspaces/{wid}/config", headers=h, json={"llm_providers": [provider]}
        )
        assert r.status_code == 200, r.text
        ids = []
        for name, env in (("front", {"DEPLOY_TOKEN": env_secret}), ("back", {})):
            r = await api.post(
                f"/api/v1/workspaces/{wid}/sandboxes",
                headers=h,
                json={
                    "name": name,
                    "agent_config": {"primary_agent": {"name": f"{name}-lead", "role": "Eng"}},
                    "environment_variables": env,
                },
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["data"]["sandbox_id"])
        for sid in ids:
            await eventually(
                lambda sid=sid: api.get(f"/api/v1/sandboxes/{sid}", headers=h),
                lambda r: r.json()["data"]["status"] == "running",
                90,
                f"{sid} running",
            )
        r = await api.post(
            f"/api/v1/sandboxes/{ids[0]}/messages",
            headers=h,
            json={
                "to_sandbox": "back",
                "message_type": "request",
                "content": {"task": "Design the auth API"},
                "requires_response": True,
                "timeout": 60,
            },
        )
        assert r.status_code == 202, r.text
        mid = r.json()["data"]["message_id"]
        await eventually(
            lambda: api.get(f"/api/v1/messages/{mid}", headers=h),
            lambda r: r.json()["data"]["status"] == "responded",
            90,
            "the agent's reply",
        )
        # The secrets really reached their destinations (else their absence proves nothing).
        assert fake.requests and fake.requests[0].headers["authorization"] == f"Bearer {api_key}"
        got = _container_env(container_name(ids[0]))
        assert f"DEPLOY_TOKEN={env_secret}" in got
        for sid in ids:
            assert (await api.delete(f"/api/v1/sandboxes/{sid}", headers=h)).status_code == 204
    return ids, mid


async def _temporal_show(settings: Settings, workflow_id: str, admin_email: str) -> dict[str, str]:
    """`temporal workflow show` of one history, decoded through the API (under uvicorn, as
    `aintandem api` runs) as an admin and as a normal user: what each of them can read."""
    from bench.stack import UvicornThread

    port = free_port()
    server = UvicornThread(create_app(settings), port)
    await asyncio.to_thread(server.start)
    shown = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            tokens = {
                "admin": (await _account(http, admin_email)).access_token,
                "user": (await new_account(http)).access_token,
            }
        for who, token in tokens.items():
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    temporal_cli(),
                    "workflow",
                    "show",
                    "--workflow-id",
                    workflow_id,
                    "--address",
                    settings.resolved_temporal_address,
                    "--codec-endpoint",
                    f"http://127.0.0.1:{port}{CODEC}",
                    "--codec-auth",
                    f"Bearer {token}",
                    "--output",
                    "json",
                    # Refused by the codec server, the CLI retries until this runs out.
                    "--command-timeout",
                    "60s" if who == "admin" else "5s",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert (done.returncode == 0) == (who == "admin"), done.stderr[-2000:]
            # Payload bytes are base64 in the JSON: look at them decoded, as a reader would.
            with contextlib.suppress(ValueError):
                readable = b"\n".join(_strings_and_base64(json.loads(done.stdout)))
                shown[who] = readable.decode("utf-8", "replace")
            shown[who] = shown.get(who, "") + done.stdout + done.stderr
    finally:
        await asyncio.to_thread(server.stop)
    return shown


def _scripted_reply() -> Scripted:
    return Scripted(200, openai_reply("Designed: POST /auth/login"))


def _container_env(name: str) -> list[str]:
    import docker

    client = docker.from_env()
    try:
        return list(client.containers.get(name).attrs["Config"]["Env"])
    finally:
        client.close()


def _event_payloads(event: Any) -> Iterator[Payload]:
    """Every Payload a codec encodes anywhere in a history event. Not encoded, by Temporal's
    design: search attributes (they hold ids; Temporal indexes them) and the SDK core's own
    local-activity bookkeeping (marker detail "data": seq, attempt, activity id and type,
    times; the activity's result is the "result" detail, which is encoded)."""
    if event.HasField("marker_recorded_event_attributes"):
        marker = event.marker_recorded_event_attributes
        for key, payloads in marker.details.items():
            if key != "data":
                yield from _walk(payloads)
        return
    yield from _walk(event)


def _walk(value: Any) -> Iterator[Payload]:
    if isinstance(value, Payload):
        yield value
    elif isinstance(value, Message):
        for field, v in value.ListFields():
            if field.name != "search_attributes":
                yield from _walk(v)
    elif not isinstance(value, str | bytes | int | float | bool):
        for v in value.values() if hasattr(value, "values") else value:
            yield from _walk(v)
