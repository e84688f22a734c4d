"""Request-wide input hygiene, checked once before routing (api/middleware.py calls it).

What no endpoint can accept, whatever its schema, and what used to get past the schemas:

- JSON bodies with `NaN`, `Infinity`, `-Infinity` (not JSON, RFC 8259) or a number that
  overflows to infinity (`1e999`): Python's parser takes them, the API stored them and later
  sent them bare on WebSockets, where a client's JSON.parse fails. → 400, as for invalid JSON.
- JSON nested deeper than MAX_JSON_DEPTH levels (the body object itself is level 1, so message
  `content` keeps 31): hundreds of levels were stored, then every listing that contained them
  answered 500 (Python's recursion limit while re-reading and encoding them), and ~1000 levels
  fail the parser itself. → 422 VALIDATION_ERROR naming the top-level field.
- NUL (U+0000) in any JSON string or key: PostgreSQL's text and JSONB cannot hold it (the
  insert failed with a 500 there while SQLite stored it); a lone surrogate (`"\ud800"`) is no
  text at all (UTF-8 cannot encode it, the drivers failed with a 500). → 422 naming the field.
- Control characters (Unicode Cc, NUL included) in a query parameter (`?search=%00`): no
  filter means anything with them, and PostgreSQL refuses NUL in a query. → 422 naming it.

Bodies that are not JSON at all are left to FastAPI (its 400); only JSON ones are inspected.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl

from domain.errors import ErrorCode

MAX_JSON_DEPTH = 32
_MAX_FIELD_CHARS = 200


@dataclass(frozen=True)
class Problem:
    """A refusal: HTTP status, the spec's error code and message, the per-field details."""

    status: int
    message: str
    fields: list[dict[str, str]] = field(default_factory=list)
    code: str = ErrorCode.VALIDATION_ERROR.value

    @property
    def details(self) -> dict[str, Any]:
        return {"fields": self.fields}

    def as_configuration_invalid(self) -> Problem:
        """The same refusal as a configuration endpoint words it (api/validation.py)."""
        return replace(
            self, message="Configuration is invalid", code=ErrorCode.CONFIGURATION_INVALID.value
        )


class _NonFinite:
    """Stands in for NaN/Infinity while parsing, so the walk can name where it was."""

    def __init__(self, text: str) -> None:
        self.text = text


# NUL, and lone surrogates (`"\ud800"` is valid JSON syntax but no Unicode text: UTF-8 cannot
# encode it, so the database driver fails on it).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters"
    return "must not contain unpaired UTF-16 surrogates"


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _field_name(path: list[str | int]) -> str:
    name = ".".join(str(p) for p in path) or "body"
    return name if len(name) <= _MAX_FIELD_CHARS else name[: _MAX_FIELD_CHARS - 1] + "…"


def _problem_field(path: list[str | int], message: str) -> list[dict[str, str]]:
    return [{"field": _field_name(path), "message": message, "location": "body"}]


def inspect_json_body(body: bytes) -> Problem | None:
    """The body's problem, or None when it is fine or not parseable JSON (FastAPI's 400)."""
    try:
        doc = json.loads(body, parse_constant=_NonFinite, parse_float=_parse_float)
    except RecursionError:
        return Problem(
            422,
            f"Request body is nested deeper than {MAX_JSON_DEPTH} levels",
            [{"field": "body", "message": "nested too deep", "location": "body"}],
        )
    except ValueError:  # not JSON (or not UTF-8): FastAPI answers it as such
        return None
    # Iterative walk (the point is to survive hostile depth): (value, path, depth).
    stack: list[tuple[Any, list[str | int], int]] = [(doc, [], 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, _NonFinite):
            return Problem(
                400,
                "Request body is not valid JSON: NaN and Infinity are not JSON numbers",
                _problem_field(path, f"{value.text} is not a JSON number"),
            )
        if isinstance(value, str):
            if (problem := _unstorable(value)) is not None:
                return Problem(422, "Request validation failed", _problem_field(path, problem))
            continue
        if not isinstance(value, dict | list):
            continue
        if depth + 1 > MAX_JSON_DEPTH:
            return Problem(
                422,
                "Request validation failed",
                _problem_field(path[:1], f"nested deeper than {MAX_JSON_DEPTH} levels"),
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if (problem := _unstorable(key)) is not None:
                    shown = _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", key)
                    return Problem(
                        422, "Request validation failed", _problem_field([*path, shown], problem)
                    )
                stack.append((item, [*path, key], depth + 1))
        else:
            stack.extend((item, [*path, i], depth + 1) for i, item in enumerate(value))
    return None


def _control_char(text: str) -> str | None:
    for ch in text:
        if unicodedata.category(ch) == "Cc":
            return ch
    return None


def inspect_query(query_string: bytes) -> Problem | None:
    """Control characters in a query parameter's name or value (decoded as Starlette does)."""
    if not query_string:
        return None
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        for text in (name, value):
            ch = _control_char(text)
            if ch is not None:
                shown = "".join(c if _control_char(c) is None else "?" for c in name)
                return Problem(
                    422,
                    "Request validation failed",
                    [
                        {
                            "field": shown[:_MAX_FIELD_CHARS] or "query",
                            "message": f"must not contain control characters (U+{ord(ch):04X})",
                            "location": "query",
                        }
                    ],
                )
    return None
