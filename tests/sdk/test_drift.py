"""Drift check: every field the SDK's models declare exists in the server's OpenAPI document.

The live stack's `/api/v1/openapi.json` is the source of truth. Each SDK model is tied to the
response of an operation (by its stable operation id) and checked field by field, nested models
included, so a renamed or removed response field fails here instead of reading as None.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import aintandem._models as m
import httpx
import pytest
from pydantic import BaseModel

from tests.live_stack import Stack

pytestmark = pytest.mark.e2e

# (model, operation id, path inside the success envelope: "data", "data.agents[]" for items
# of a field, "meta"). A model shared by a detail and a summary response is checked against the
# detail; its summary-only operations are listed in PARTIAL with the fields they lack by design.
CHECKS: list[tuple[type[BaseModel], str, str]] = [
    (m.User, "auth_register", "data"),
    (m.TokenRefresh, "auth_refresh", "data"),
    (m.Workspace, "workspaces_get", "data"),
    (m.Workspace, "workspaces_update", "data"),
    (m.PageMeta, "workspaces_list", "meta"),
    (m.WorkspaceConfig, "workspace_config_get", "data"),
    (m.WorkspaceConfig, "workspace_config_update", "data"),
    (m.DiscoveredAgent, "agents_discover", "data.agents[]"),
    (m.SandboxInfo, "sandboxes_get", "data"),
    (m.LifecycleResult, "sandboxes_start", "data"),
    (m.LifecycleResult, "sandboxes_stop", "data"),
    (m.Logs, "sandboxes_logs", "data"),
    (m.SandboxConfig, "sandbox_config_get", "data"),
    (m.SandboxConfig, "sandbox_config_update", "data"),
    (m.MessageAccepted, "messages_send", "data"),
    (m.BroadcastResult, "messages_broadcast", "data"),
    (m.Message, "messages_get", "data"),
    (m.CollaborationSummary, "collaborations_list", "data[]"),
    (m.PageMeta, "collaborations_list", "meta"),
]
# (model, operation, path, fields the summary lacks by design — declared optional in the SDK).
PARTIAL: list[tuple[type[BaseModel], str, str, set[str]]] = [
    (m.Workspace, "workspaces_create", "data", {"sandboxes"}),
    (m.Message, "messages_list", "data.messages[]", {"response"}),
    (m.Message, "messages_list_workspace", "data.messages[]", {"response"}),
    (m.LoginResult, "auth_login", "data", {"user.organization", "user.created_at"}),
    (
        m.SandboxInfo,
        "sandboxes_create",
        "data",
        {
            "status_reason",
            "agent_config",
            "resources",
            "mcp_servers",
            "health",
            "restart_count",
            "metrics",
            "updated_at",
            "started_at",
        },
    ),
]
# Not yet in the server's tree everywhere: checked when the operation exists.
COLLABORATION_CHECKS: list[tuple[type[BaseModel], str, str]] = [
    (m.CollaborationStarted, "collaborations_orchestrate", "data"),
    (m.CollaborationInfo, "collaborations_get", "data"),
    (m.CollaborationCancelled, "collaborations_cancel", "data"),
]
# Operations whose data the server declares as a free-form object: nothing to check against.
UNTYPED = [
    (m.SandboxStatus, "sandboxes_status"),
    (m.SandboxMetrics, "sandboxes_metrics"),
    (m.AggregateMetrics, "workspace_metrics_aggregate"),
    (m.SystemHealth, "system_health"),
    (m.SystemInfo, "system_info"),
    (m.MessageAction, "messages_retry"),
]


@pytest.fixture(scope="module")
def openapi(stack: Stack) -> dict[str, Any]:
    response = httpx.get(f"{stack.api_url}/openapi.json", timeout=30)
    response.raise_for_status()
    return response.json()


def _operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ops = {}
    for item in doc["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and "operationId" in op:
                ops[op["operationId"]] = op
    return ops


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and unwrap Optional (anyOf with null) down to the concrete schema."""
    while True:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            node = doc["components"]["schemas"][name]
            continue
        for key in ("anyOf", "oneOf", "allOf"):
            if key in node:
                options = [o for o in node[key] if o.get("type") != "null"]
                if len(options) == 1:
                    node = options[0]
                    break
        else:
            return node


def _response_schema(doc: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    for status in ("200", "201", "202"):
        if status in op["responses"]:
            content = op["responses"][status].get("content", {})
            return _resolve(doc, content["application/json"]["schema"])
    raise AssertionError(f"no success response in {op['operationId']}")


def _at(doc: dict[str, Any], schema: dict[str, Any], path: str) -> dict[str, Any]:
    for part in path.split("."):
        many = part.endswith("[]")
        props = schema.get("properties", {})
        assert part.rstrip("[]") in props, f"{part} not in {sorted(props)}"
        schema = _resolve(doc, props[part.rstrip("[]")])
        if many:
            schema = _resolve(doc, schema["items"])
    return schema


def _nested_model(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The SDK model inside `X`, `X | None` or `list[X]` (and whether it is a list)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found:
                return found
        return None
    if origin is list:
        inner = _nested_model(typing.get_args(annotation)[0])
        return (inner[0], True) if inner else None
    if isinstance(annotation, type) and issubclass(annotation, m.APIModel):
        return annotation, False
    return None


def missing_fields(
    doc: dict[str, Any], model: type[BaseModel], schema: dict[str, Any], where: str
) -> list[str]:
    """Declared fields of `model` (recursively) that the schema does not have."""
    props = schema.get("properties")
    if props is None:
        return []  # a free-form object: nothing to compare with
    problems = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in props:
            problems.append(f"{where}.{key} ({model.__name__})")
            continue
        nested = _nested_model(field.annotation)
        if nested:
            sub = _resolve(doc, props[key])
            if nested[1]:
                sub = _resolve(doc, sub.get("items", {}))
            problems += missing_fields(doc, nested[0], sub, f"{where}.{key}")
    return problems


@pytest.mark.parametrize(("model", "operation", "path"), CHECKS, ids=lambda v: str(v))
def test_model_fields_exist_in_the_server_schema(
    openapi: dict[str, Any], model: type[BaseModel], operation: str, path: str
) -> None:
    ops = _operations(openapi)
    assert operation in ops, f"operation {operation} is gone from the server"
    schema = _at(openapi, _response_schema(openapi, ops[operation]), path)
    assert missing_fields(openapi, model, schema, operation) == []


@pytest.mark.parametrize(("model", "operation", "path", "lacks"), PARTIAL, ids=lambda v: str(v))
def test_summary_responses_lack_only_the_known_fields(
    openapi: dict[str, Any], model: type[BaseModel], operation: str, path: str, lacks: set[str]
) -> None:
    ops = _operations(openapi)
    schema = _at(openapi, _response_schema(openapi, ops[operation]), path)
    missing = missing_fields(openapi, model, schema, "")
    assert {entry[1:].split(" ")[0] for entry in missing} == lacks
    for field in lacks:
        top = model.model_fields[field.split(".")[0]]
        assert not top.is_required() or "." in field


def test_collaboration_models_match_when_the_routes_exist(openapi: dict[str, Any]) -> None:
    ops = _operations(openapi)
    absent = [op for _, op, _ in COLLABORATION_CHECKS if op not in ops]
    if absent:
        pytest.skip(f"collaboration routes not in the server yet: {', '.join(absent)}")
    for model, operation, path in COLLABORATION_CHECKS:
        schema = _at(openapi, _response_schema(openapi, ops[operation]), path)
        assert missing_fields(openapi, model, schema, operation) == []


@pytest.mark.parametrize(("model", "operation"), UNTYPED, ids=lambda v: str(v))
def test_untyped_operations_are_still_untyped(
    openapi: dict[str, Any], model: type[BaseModel], operation: str
) -> None:
    """If the server starts declaring these schemas, they join CHECKS (this test says so)."""
    ops = _operations(openapi)
    assert operation in ops
    data = _at(openapi, _response_schema(openapi, ops[operation]), "data")
    assert "properties" not in data, f"{operation} now has a schema: check {model.__name__}"


def test_the_check_catches_a_renamed_field(openapi: dict[str, Any]) -> None:
    """The checker itself: a field the server does not have (as after a rename) is reported,
    also when nested."""

    class RenamedWorkspace(m.Workspace):
        sandboxes_count: int | None = None

    class Inner(m.Health):
        last_heartbeat_at: str | None = None

    class RenamedNested(m.SandboxInfo):
        health: Inner | None = None

    ops = _operations(openapi)
    ws = _at(openapi, _response_schema(openapi, ops["workspaces_get"]), "data")
    assert missing_fields(openapi, RenamedWorkspace, ws, "w") == [
        "w.sandboxes_count (RenamedWorkspace)"
    ]
    sb = _at(openapi, _response_schema(openapi, ops["sandboxes_get"]), "data")
    assert missing_fields(openapi, RenamedNested, sb, "s") == ["s.health.last_heartbeat_at (Inner)"]
