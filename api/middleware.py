"""Outermost ASGI middleware: request id, body-size limit, input hygiene (api/input_guard.py),
last-resort 500 envelope, metrics."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import request_id_var
from api.envelope import error_payload
from api.input_guard import Problem, inspect_json_body, inspect_query
from api.metrics import HTTP_LATENCY, HTTP_REQUESTS
from api.validation import is_config_request
from domain.errors import ErrorCode

log = logging.getLogger("aintandem.api")

_MAX_REQUEST_ID = 128
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _json_body(headers: dict[bytes, bytes], method: str) -> bool:
    """Whether FastAPI would parse this request's body as JSON (no content type counts)."""
    if method not in _BODY_METHODS:
        return False
    ctype = headers.get(b"content-type")
    if ctype is None:
        return True
    media = ctype.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def _clean_request_id(raw: bytes | None) -> str:
    # Honour the client's id when it is printable and short; never echo arbitrary bytes back.
    if raw:
        text = raw.decode("latin-1").strip()
        if 0 < len(text) <= _MAX_REQUEST_ID and text.isprintable():
            return text
    return str(uuid.uuid4())


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int = 1_048_576) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = _clean_request_id(headers.get(b"x-request-id"))
        request_id_var.set(rid)
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message.setdefault("headers", [])
                message["headers"] = [
                    *[(k, v) for k, v in message["headers"] if k.lower() != b"x-request-id"],
                    (b"x-request-id", rid.encode("latin-1")),
                ]
            await send(message)

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._send_error(send_wrapper, 413, "Request body too large")
        else:
            try:
                receive = self._limited(receive)
                problem = inspect_query(scope.get("query_string") or b"")
                if problem is None and _json_body(headers, scope.get("method", "")):
                    receive, problem = await self._inspected(receive)
                    if problem is not None and problem.status == 422 and is_config_request(scope):
                        problem = problem.as_configuration_invalid()
                if problem is not None:
                    await self._send_problem(send_wrapper, problem)
                else:
                    await self.app(scope, receive, send_wrapper)
            except _BodyTooLarge:
                if not status_holder["started"]:
                    await self._send_error(send_wrapper, 413, "Request body too large")
            except Exception:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                if not status_holder["started"]:
                    await self._send_error(
                        send_wrapper, 500, "Internal server error", ErrorCode.INTERNAL_ERROR
                    )
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        HTTP_REQUESTS.labels(method, template, str(status_holder["status"])).inc()
        HTTP_LATENCY.labels(method, template).observe(time.perf_counter() - started)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        return wrapped

    @staticmethod
    async def _inspected(receive: Receive) -> tuple[Receive, Problem | None]:
        """Read the whole body (the app would anyway), inspect it, and hand the app a receive
        that replays it."""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                first: Message | None = message
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                first = None
                break
        body = b"".join(chunks)
        problem = inspect_json_body(body) if body and first is None else None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first or {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, problem

    @classmethod
    async def _send_problem(cls, send: Send, problem: Problem) -> None:
        await cls._send_error(send, problem.status, problem.message, problem.code, problem.details)

    @staticmethod
    async def _send_error(
        send: Send,
        status: int,
        message: str,
        code: str = ErrorCode.VALIDATION_ERROR,
        details: dict[str, Any] | None = None,
    ) -> None:
        body = json.dumps(error_payload(code, message, details)).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
