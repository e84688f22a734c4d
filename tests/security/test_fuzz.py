"""Property-based fuzzing of every operation in the app's OpenAPI document (schemathesis).

In-process over ASGI, on SQLite, as a real registered user whose workspace, sandbox, message and
collaboration the path parameters point at (so handlers run past their 404s). Every response
must be documented (status code, content type, body schema) and none may be a server error —
except 503 SERVICE_UNAVAILABLE from the operations that need Temporal, which is not running here
(that answer is documented and checked against its schema like any other).

Bounded and deterministic: hypothesis is derandomized, with a small example budget per operation.
`POST /auth/logout` is left out: fuzzing it with the suite's token would end the session every
other operation is fuzzed with (tests/api/test_auth.py covers it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CheckContext
from schemathesis.core.failures import Failure
from schemathesis.generation import GenerationMode
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.orm import Session

from api.app import create_app
from domain.ids import Prefix, new_id
from domain.timeutil import utcnow
from store.migrate import upgrade
from store.models import Message, Sandbox
from tests.conftest import make_settings
from tests.security.conftest import collaboration_model, insert_row
from tests.security.routes import Sampler

pytestmark = [pytest.mark.fuzz, pytest.mark.security]

MAX_EXAMPLES = 12
OPENAPI = "/api/v1/openapi.json"
# Fuzzing logout with the suite's token would end the session the other operations use.
EXCLUDED = {"auth_logout"}


def _seed(app: Any, db_file: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A registered user (through the API) and one object of every id kind they own."""
    from schemathesis.python.asgi import get_client

    client = get_client(app)
    creds = {"email": "fuzz.owner@example.com", "password": "fuzz-password-1", "name": "Fuzz"}
    r = client.post("http://testserver/api/v1/auth/register", json=creds)
    assert r.status_code == 201, r.text
    r = client.post(
        "http://testserver/api/v1/auth/login", json={k: creds[k] for k in ("email", "password")}
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    headers = {"Authorization": f"Bearer {data['access_token']}"}
    r = client.post("http://testserver/api/v1/workspaces", json={"name": "fuzzed"}, headers=headers)
    assert r.status_code == 201, r.text
    wid = r.json()["data"]["workspace_id"]
    sid, peer, mid, col = (
        new_id(Prefix.SANDBOX),
        new_id(Prefix.SANDBOX),
        new_id(Prefix.MESSAGE),
        new_id(Prefix.COLLABORATION),
    )
    engine = create_sync_engine(f"sqlite:///{db_file}")
    with Session(engine) as s:
        for sb_id, name in ((sid, "front"), (peer, "back")):
            s.add(
                Sandbox(
                    id=sb_id,
                    workspace_id=wid,
                    name=name,
                    status="stopped",
                    agent_config={"primary_agent": {"name": "lead", "role": "Engineer"}},
                )
            )
        s.flush()
        s.add(
            Message(
                id=mid,
                workspace_id=wid,
                from_sandbox_id=sid,
                to_sandbox_id=peer,
                message_type="request",
                content={"task": "x"},
                status="failed",
                created_at=utcnow(),
            )
        )
        model = collaboration_model()
        if model is not None:
            s.add(
                insert_row(
                    model,
                    {
                        "id": col,
                        "workspace_id": wid,
                        "task": "fuzz",
                        "status": "in_progress",
                        "mode": "orchestrated",
                        "orchestrator_sandbox_id": sid,
                        "orchestrator_agent": "lead",
                        "participants": [
                            {"sandbox_id": sid, "name": "front", "agent": "lead"},
                            {"sandbox_id": peer, "name": "back", "agent": "lead"},
                        ],
                        "timeout_seconds": 300,
                        "estimated_duration_seconds": 300,
                    },
                    {"users": data["user"]["user_id"], "workspaces": wid, "sandboxes": sid},
                    "fuzz",
                )
            )
        s.commit()
    engine.dispose()
    ids = {"workspace_id": wid, "sandbox_id": sid, "message_id": mid, "collaboration_id": col}
    return headers, ids


def _operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every documented operation, read from the app at collection time."""
    app = create_app(make_settings("sqlite+aiosqlite:///:memory:", Path("/nonexistent")))
    return [
        (method.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        for method, op in ops.items()
        if op.get("operationId") not in EXCLUDED
    ]


@dataclass
class Fuzzed:
    schema: Any
    headers: dict[str, str]
    ids: dict[str, str]
    sampler: Sampler


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    db_file = data_dir / "fuzz.db"
    url = f"sqlite+aiosqlite:///{db_file}"
    upgrade(url)
    app = create_app(make_settings(url, data_dir, max_workspaces=1000))
    schema = schemathesis.openapi.from_asgi(OPENAPI, app)
    headers, ids = _seed(app, db_file)
    yield Fuzzed(schema, headers, ids, Sampler(app.openapi()))
    # The app's lifespan (its event-bus poller) runs in schemathesis' portal thread: stop it now
    # rather than at interpreter exit.
    from schemathesis.python.asgi import shutdown_lifespans

    shutdown_lifespans()


def no_server_error(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """not_a_server_error, except that a documented 503 SERVICE_UNAVAILABLE (Temporal is not
    running in this suite) is the right answer, and is schema-checked like any other."""
    if response.status_code == 503:
        try:
            if response.json()["error"]["code"] == "SERVICE_UNAVAILABLE":
                return None
        except (ValueError, KeyError, TypeError):
            pass
    if response.status_code >= 500:
        raise Failure(
            operation=case.operation.label,
            title="Server error",
            message=f"{response.status_code}: {response.text[:500]}",
        )
    return None


@pytest.mark.parametrize(("method", "path"), _operations(), ids=lambda v: str(v))
def test_openapi_contract_holds_under_fuzzing(fuzzed: Fuzzed, method: str, path: str) -> None:
    from schemathesis.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    operation = fuzzed.schema[path][method]
    seeded = {p.name: fuzzed.ids[p.name] for p in operation.path_parameters}
    checks = [
        no_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    # (strategy, examples, may be unsatisfiable): the user's own objects (handlers run past their
    # ownership checks), valid and invalid; then arbitrary ids (the not-found paths, malformed ids
    # included). An operation whose only inputs are fixed ids has nothing to make invalid.
    budgets = [
        (
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=seeded),
            MAX_EXAMPLES,
            False,
        ),
        (
            operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=seeded),
            MAX_EXAMPLES,
            True,
        ),
    ]
    if seeded:
        budgets.append((operation.as_strategy(GenerationMode.POSITIVE), MAX_EXAMPLES // 3, False))

    # One explicit happy-path case first: the user's ids and a minimal valid body. (Hypothesis
    # draws nothing from a strategy whose every input is fixed, so path-only operations would
    # otherwise only ever see random ids.)
    explicit: dict[str, Any] = {"path_parameters": seeded}
    body_schema, _ = fuzzed.sampler.request_schema(path, method)
    if body_schema is not None:
        explicit |= {"body": fuzzed.sampler.sample(body_schema), "media_type": "application/json"}
    operation.Case(**explicit).call_and_validate(headers=fuzzed.headers, checks=checks)

    for strategy, budget, may_be_unsatisfiable in budgets:

        @given(case=strategy)
        @settings(
            max_examples=budget,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=fuzzed.headers, checks=checks)

        try:
            fuzz()
        except Unsatisfiable:
            if not may_be_unsatisfiable:
                raise
