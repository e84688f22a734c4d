"""Outermost ASGI middleware: request id, body-size limit, last-resort 500 envelope, metrics."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import request_id_var
from api.envelope import error_payload
from api.metrics import HTTP_LATENCY, HTTP_REQUESTS
from domain.errors import ErrorCode

log = logging.getLogger("aintandem.api")

_MAX_REQUEST_ID = 128


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
                await self.app(scope, self._limited(receive), send_wrapper)
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
    async def _send_error(
        send: Send, status: int, message: str, code: str = ErrorCode.VALIDATION_ERROR
    ) -> None:
        body = json.dumps(error_payload(code, message)).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
