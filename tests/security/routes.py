"""The app's route table, flattened, and minimal valid request bodies from its OpenAPI document.

The security matrices are generated from these, so a route added tomorrow is checked tomorrow
without anyone editing the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute

_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?}")


@dataclass(frozen=True)
class RouteInfo:
    kind: str  # "http" | "websocket"
    path: str
    methods: tuple[str, ...]
    params: tuple[str, ...]
    operation_id: str | None
    include_in_schema: bool

    def fill(self, values: dict[str, str]) -> str:
        return _PARAM.sub(lambda m: values[m.group(1)], self.path)

    def __str__(self) -> str:
        return f"{'/'.join(self.methods) or 'WS'} {self.path}"


def _flat(app: FastAPI) -> list[Any]:
    try:  # FastAPI >= 0.16x keeps included routers nested; this walks them.
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI flattens include_router into app.routes
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def routes(app: FastAPI) -> list[RouteInfo]:
    """Every HTTP API route and WebSocket route the app serves (docs/openapi routes excluded)."""
    out = []
    for rc in _flat(app):
        original = getattr(rc, "original_route", rc)
        path = rc.path
        if isinstance(original, APIRoute):
            out.append(
                RouteInfo(
                    "http",
                    path,
                    tuple(sorted(m for m in rc.methods if m != "HEAD")),
                    tuple(_PARAM.findall(path)),
                    rc.operation_id,
                    bool(rc.include_in_schema),
                )
            )
        elif isinstance(original, APIWebSocketRoute):
            out.append(RouteInfo("websocket", path, (), tuple(_PARAM.findall(path)), None, False))
    assert out, "no routes found: the route-table walk no longer matches FastAPI"
    return out


# -- minimal valid instances of a JSON schema ----------------------------------------------------


class Sampler:
    """The smallest instance of an OpenAPI (JSON) schema that validates: required properties
    only, lower bounds, first enum value. Enough to get a body past validation so the route's own
    authorization decides the answer."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self._n = 0

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.doc
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def request_schema(self, path: str, method: str) -> tuple[dict[str, Any] | None, bool]:
        """The JSON request-body schema of an operation and whether the body is required."""
        op = self.doc["paths"].get(path, {}).get(method.lower(), {})
        body = op.get("requestBody")
        if not body:
            return None, False
        content = body.get("content", {})
        assert "application/json" in content, f"{method} {path}: non-JSON body {list(content)}"
        return content["application/json"]["schema"], bool(body.get("required"))

    def required_query(self, path: str, method: str) -> dict[str, Any]:
        op = self.doc["paths"].get(path, {}).get(method.lower(), {})
        return {
            p["name"]: self.sample(p.get("schema", {}))
            for p in op.get("parameters", [])
            if p.get("in") == "query" and p.get("required")
        }

    def sample(self, schema: dict[str, Any]) -> Any:
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("default") is not None:
            return schema["default"]
        if "enum" in schema:
            return schema["enum"][0]
        if schema.get("examples"):
            return schema["examples"][0]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [self.resolve(o) for o in schema[key]]
                usable = [o for o in options if o.get("type") != "null"] or options
                return self.sample(usable[0])
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.resolve(part))
            return self.sample(merged)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or (kind is None and "properties" in schema):
            props = schema.get("properties", {})
            return {name: self.sample(props.get(name, {})) for name in schema.get("required", [])}
        if kind == "array":
            return [self.sample(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            return int(self._number(schema))
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        return {}

    def _string(self, schema: dict[str, Any]) -> str:
        self._n += 1
        fmt = schema.get("format")
        if fmt == "email":
            return f"probe{self._n}@example.com"
        if fmt == "date-time":
            return "2026-01-01T00:00:00Z"
        assert "pattern" not in schema, f"sampler cannot satisfy pattern {schema['pattern']!r}"
        text = f"probe-{self._n}"
        low, high = schema.get("minLength", 1), schema.get("maxLength", 100)
        text = (text * (low // len(text) + 1))[: max(low, min(len(text), high))]
        return text[:high]

    @staticmethod
    def _number(schema: dict[str, Any]) -> float:
        if "minimum" in schema:
            return float(schema["minimum"])
        if "exclusiveMinimum" in schema:
            return float(schema["exclusiveMinimum"]) + 1
        if "maximum" in schema:
            return min(1.0, float(schema["maximum"]))
        return 1.0
