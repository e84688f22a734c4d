"""Temporal's codec-server protocol, for operators: the Temporal UI and CLI send the encrypted
payloads of a history here and show what comes back decoded (config/payload_codec.py).

- `POST /codec/decode`, `POST /codec/encode`: body and answer `{"payloads": [{"metadata":
  {key: base64}, "data": base64}]}` (Temporal's protobuf JSON), header `X-Namespace` accepted.
  Admins only (AINTANDEM_ADMIN_EMAILS): a bearer token (`temporal workflow show --codec-endpoint
  … --codec-auth "Bearer …"`) or the codec session cookie (the browser, see below).
- CORS for these two routes only, and only for AINTANDEM_CODEC_CORS_ORIGINS (default: the
  embedded Temporal UI's origins). A request whose `Origin` is not one of them is refused (403)
  whatever its credentials, so the cookie cannot be ridden by another page.
- The Temporal UI has no login of its own, so it cannot pass a token; it can send cookies
  ("include cross-origin credentials"). `GET /codec/login` is a sign-in page: an admin signs in
  there once, `POST /codec/session` (bearer) sets an HttpOnly, SameSite=Strict cookie scoped to
  `/api/v1/codec` that holds their access token (it expires with it; a logout ends it too).
  The UI and the API must be the same site (e.g. both on 127.0.0.1, ports may differ).

Not in the OpenAPI document: these are Temporal's routes, not the REST contract (no envelope on
success; errors use the spec's error envelope).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload

from api.deps import AppState, Principal, StateDep, authenticate, bearer_token
from api.envelope import ok
from api.errors import STATUS_BY_CODE, error_response
from config.payload_codec import EncryptionCodec, PayloadKeyError
from config.settings import API_PREFIX
from domain.errors import (
    AuthenticationFailed,
    AuthorizationFailed,
    ConfigurationInvalid,
    DomainError,
    ErrorCode,
    ValidationFailed,
)
from domain.timeutil import iso, utcnow

COOKIE = "aintandem_codec"
COOKIE_PATH = f"{API_PREFIX}/codec"
# What the Temporal UI sends (src/lib/services/data-encoder.ts): Content-Type, X-Namespace and,
# when it passes its own access token, Authorization and Authorization-Extras.
ALLOWED_HEADERS = ("content-type", "x-namespace", "authorization", "authorization-extras")
PREFLIGHT_MAX_AGE = "600"


def _allowed_origins(state: AppState) -> set[str]:
    return {o.rstrip("/") for o in state.settings.resolved_codec_cors_origins()}


def _cors_headers(request: Request) -> dict[str, str]:
    """CORS answer headers for an allowed Origin; none for any other (the browser refuses)."""
    origin = request.headers.get("origin")
    if origin is None or origin not in _allowed_origins(request.app.state.aintandem):
        return {}
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }
    if request.headers.get("access-control-request-private-network") == "true":
        headers["Access-Control-Allow-Private-Network"] = "true"
    return headers


class _CodecRoute(APIRoute):
    """Errors answered here (not by the app's handlers) so they carry the CORS headers too: the
    UI then reads a 401/403 as such instead of as a network failure."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_cors(request: Request) -> Response:
            try:
                response = await handler(request)
            except DomainError as exc:
                headers = (
                    {"WWW-Authenticate": "Bearer"}
                    if exc.code is ErrorCode.AUTHENTICATION_FAILED
                    else None
                )
                response = error_response(
                    getattr(exc, "http_status", None) or STATUS_BY_CODE.get(exc.code, 500),
                    exc.code.value,
                    exc.message,
                    exc.details,
                    headers,
                )
            for key, value in _cors_headers(request).items():
                response.headers[key] = value
            return response

        return with_cors


class _NotJSON(ValidationFailed):
    http_status = 400  # as the app answers any body that is not JSON (api/errors.py)


router = APIRouter(
    prefix="/codec", tags=["codec"], include_in_schema=False, route_class=_CodecRoute
)


async def _admin(request: Request, state: AppState, *, cookie: bool) -> Principal:
    """An admin's live session, from the bearer token or (`cookie`) the codec cookie."""
    if request.headers.get("authorization") is not None or not cookie:
        token = bearer_token(request)
    else:
        token = request.cookies.get(COOKIE, "")
        if not token:
            raise AuthenticationFailed("Missing bearer token or codec session cookie")
    async with state.sessions() as session:
        principal = await authenticate(state, session, token)
    if principal.user.role != "admin":
        raise AuthorizationFailed("Only administrators can use the codec server")
    return principal


def _check_origin(request: Request, state: AppState) -> None:
    origin = request.headers.get("origin")
    if origin is not None and origin not in _allowed_origins(state):
        raise AuthorizationFailed(
            "This origin may not call the codec server (AINTANDEM_CODEC_CORS_ORIGINS)",
            {"origin": origin},
        )


async def _payloads(request: Request) -> list[Payload]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise _NotJSON("Request body is not valid JSON", {"fields": []}) from exc
    if not isinstance(body, dict) or not isinstance(body.get("payloads"), list):
        raise ValidationFailed(
            'The body is {"payloads": [...]}',
            {
                "fields": [
                    {"field": "payloads", "message": "a list of payloads", "location": "body"}
                ]
            },
        )
    out = []
    for i, item in enumerate(body["payloads"]):
        try:
            if not isinstance(item, dict):
                raise TypeError("a payload is an object {metadata, data}")
            out.append(json_format.ParseDict(item, Payload(), ignore_unknown_fields=True))
        except (json_format.ParseError, TypeError, ValueError) as exc:
            raise ValidationFailed(
                f"payloads[{i}] is not a Temporal payload",
                {
                    "fields": [
                        {"field": f"payloads.{i}", "message": str(exc)[:200], "location": "body"}
                    ]
                },
            ) from exc
    return out


def _answer(payloads: list[Payload]) -> JSONResponse:
    return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in payloads]})


def _codec(state: AppState) -> EncryptionCodec:
    return state.temporal.codec


@router.post("/decode", operation_id="codec_decode")
async def decode(request: Request, state: StateDep) -> Response:
    _check_origin(request, state)
    await _admin(request, state, cookie=True)
    payloads = await _payloads(request)
    codec = _codec(state)
    decoded = []
    for i, payload in enumerate(payloads):
        try:
            decoded += codec.decode_sync([payload])
        except PayloadKeyError as exc:
            raise ConfigurationInvalid(str(exc), {"index": i}) from exc
    return _answer(decoded)


@router.post("/encode", operation_id="codec_encode")
async def encode(request: Request, state: StateDep) -> Response:
    _check_origin(request, state)
    await _admin(request, state, cookie=True)
    return _answer(_codec(state).encode_sync(await _payloads(request)))


@router.options("/decode", operation_id="codec_decode_preflight")
@router.options("/encode", operation_id="codec_encode_preflight")
async def preflight(request: Request, state: StateDep) -> Response:
    _check_origin(request, state)
    headers = {"Allow": "POST, OPTIONS"}
    if request.headers.get("origin") is not None:
        headers |= {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        }
    return Response(status_code=204, headers=headers)


@router.post("/session", operation_id="codec_session_create")
async def create_session(request: Request, state: StateDep) -> Response:
    """The codec cookie for this admin's browser: the bearer token itself, HttpOnly, scoped to
    the codec routes, SameSite=Strict, expiring with the token."""
    principal = await _admin(request, state, cookie=False)
    token = bearer_token(request)
    ttl = max(0, int((principal.claims.expires_at - utcnow()).total_seconds()))
    response = ok({"expires_at": iso(principal.claims.expires_at), "codec_endpoint": COOKIE_PATH})
    response.set_cookie(
        COOKIE,
        token,
        max_age=ttl,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https"
        or state.settings.resolved_public_url.startswith("https://"),
    )
    return response


@router.delete("/session", operation_id="codec_session_delete", status_code=204)
async def delete_session() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


_LOGIN_SCRIPT = f"""
const api = {json.dumps(API_PREFIX)};
const out = document.getElementById("out");
async function post(path, init) {{
  const r = await fetch(api + path, {{method: "POST", credentials: "same-origin", ...init}});
  const body = await r.json().catch(() => ({{}}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body.data;
}}
document.getElementById("f").addEventListener("submit", async (ev) => {{
  ev.preventDefault();
  out.textContent = "Signing in...";
  try {{
    const login = await post("/auth/login", {{
      headers: {{"content-type": "application/json"}},
      body: JSON.stringify({{email: ev.target.email.value, password: ev.target.password.value}}),
    }});
    const s = await post("/codec/session", {{
      headers: {{authorization: "Bearer " + login.access_token}},
    }});
    out.textContent = "Signed in until " + s.expires_at + ". The Temporal UI in this browser "
      + "decodes payloads once its Codec Server setting is " + location.origin + api + "/codec "
      + "with 'Include cross-origin credentials' on.";
  }} catch (e) {{ out.textContent = "Not signed in: " + e.message; }}
}});
document.getElementById("signout").addEventListener("click", async () => {{
  await fetch(api + "/codec/session", {{method: "DELETE", credentials: "same-origin"}});
  out.textContent = "Signed out of the codec server.";
}});
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_LOGIN_SCRIPT.encode()).digest()).decode()
_LOGIN_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AInTandem codec server</title></head>
<body>
<h1>Decode Temporal payloads</h1>
<p>Workflow payloads are encrypted. Sign in as an AInTandem administrator to let the Temporal UI
in this browser decode them through <code>{COOKIE_PATH}</code>.</p>
<form id="f">
<label>Email <input name="email" type="email" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password"
required></label>
<button type="submit">Sign in</button> <button type="button" id="signout">Sign out</button>
</form>
<p id="out" role="status"></p>
<script>{_LOGIN_SCRIPT}</script>
</body></html>
"""
_LOGIN_CSP = (
    f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


@router.get("/login", operation_id="codec_login_page")
async def login_page() -> Response:
    return HTMLResponse(
        _LOGIN_PAGE,
        headers={
            "Content-Security-Policy": _LOGIN_CSP,
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
        },
    )
