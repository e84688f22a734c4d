"""Authentication: register, login, JWT hardening, refresh rotation and reuse, logout."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import jwt
import pytest

from api.app import create_app
from config.settings import Settings
from store.db import create_engine, session_factory
from store.models import User
from tests.conftest import Account, app_client, assert_error, make_settings, new_account

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"


async def test_register_returns_the_spec_shape(client: httpx.AsyncClient) -> None:
    email = f"New.User-{uuid.uuid4().hex[:6]}@Example.com"
    r = await client.post(
        REGISTER,
        json={
            "email": email,
            "password": "longenough",
            "name": "Jo",
            "organization": "Example Corp",
        },
    )
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["user_id"].startswith("usr_") and len(data["user_id"]) == 14
    assert data["email"] == email.lower()
    assert data["name"] == "Jo" and data["created_at"].endswith("Z")
    assert "password" not in r.text and "hash" not in r.text


async def test_password_is_stored_as_argon2id(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    acc = await new_account(client)
    engine = create_engine(settings.resolved_database_url)
    async with session_factory(engine)() as s:
        user = await s.get(User, acc.user_id)
        assert user is not None and user.password_hash.startswith("$argon2id$")
        assert acc.password not in user.password_hash
    await engine.dispose()


async def test_duplicate_email_is_409_case_insensitive(
    client: httpx.AsyncClient, account: Account
) -> None:
    r = await client.post(
        REGISTER, json={"email": account.email.upper(), "password": "whatever1", "name": "Dup"}
    )
    assert_error(r, 409, "RESOURCE_ALREADY_EXISTS")


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "a@b.co", "password": "short", "name": "X"},
        {"email": "nope", "password": "longenough", "name": "X"},
        {"email": "a@b.co", "password": "longenough", "name": ""},
        {"email": "a@b.co", "password": "longenough", "name": "x" * 101},
        {"email": "a@b.co", "password": "longenough", "name": "nul\x00byte"},
        {"email": "a@b.co", "password": "longenough", "name": "X", "organization": "o" * 101},
        {"email": "a@b.co", "password": "longenough", "name": "X", "role": "admin"},
        {"email": 123, "password": ["x"], "name": {"a": 1}},
        {},
    ],
)
async def test_register_rejects_bad_input(
    client: httpx.AsyncClient, payload: dict[str, object]
) -> None:
    assert_error(await client.post(REGISTER, json=payload), 422, "VALIDATION_ERROR")


async def test_login_returns_tokens_and_user(
    client: httpx.AsyncClient, account: Account, settings: Settings
) -> None:
    r = await client.post(LOGIN, json={"email": account.email, "password": account.password})
    data = r.json()["data"]
    assert data["token_type"] == "Bearer" and data["expires_in"] == 3600
    assert data["user"] == {"user_id": account.user_id, "email": account.email, "name": "Test User"}
    header = jwt.get_unverified_header(data["access_token"])
    assert header["alg"] == "HS256"
    claims = jwt.decode(
        data["access_token"],
        settings.jwt_key(),
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["sub"] == account.user_id and claims["jti"] and claims["typ"] == "access"


async def test_bad_credentials_do_not_reveal_which_part_was_wrong(
    client: httpx.AsyncClient, account: Account
) -> None:
    wrong_pw = assert_error(
        await client.post(LOGIN, json={"email": account.email, "password": "wrong-pass"}),
        401,
        "AUTHENTICATION_FAILED",
    )
    no_user = assert_error(
        await client.post(LOGIN, json={"email": "ghost@example.com", "password": "wrong-pass"}),
        401,
        "AUTHENTICATION_FAILED",
    )
    assert wrong_pw["error"]["message"] == no_user["error"]["message"]
    assert wrong_pw["error"]["details"] == no_user["error"]["details"]


def _forge(claims: dict[str, object], key: str, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _valid_claims(settings: Settings, account_token: str) -> dict[str, object]:
    return jwt.decode(
        account_token,
        settings.jwt_key(),
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


async def test_jwt_attacks_are_refused(
    client: httpx.AsyncClient, account: Account, settings: Settings
) -> None:
    good = _valid_claims(settings, account.access_token)
    key = settings.jwt_key()
    now = int(time.time())
    attacks = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}.",
        "wrong key": _forge(good, "not-the-secret-" * 4),
        "wrong audience": _forge({**good, "aud": "someone-else"}, key),
        "wrong issuer": _forge({**good, "iss": "evil"}, key),
        "expired": _forge({**good, "iat": now - 7200, "exp": now - 3600}, key),
        "missing exp": _forge({k: v for k, v in good.items() if k != "exp"}, key),
        "refresh used as access": _forge({**good, "typ": "refresh"}, key),
        "HS512 with same key": _forge(good, key, "HS512"),
        "tampered": account.access_token[:-4]
        + ("AAAA" if not account.access_token.endswith("AAAA") else "BBBB"),
        "garbage": "not.a.jwt",
    }
    for name, token in attacks.items():
        r = await client.get("/api/v1/workspaces", headers={"Authorization": f"Bearer {token}"})
        assert_error(r, 401, "AUTHENTICATION_FAILED"), name


async def test_refresh_rotates_and_reuse_revokes_the_family(client: httpx.AsyncClient) -> None:
    acc = await new_account(client)
    r = await client.post(REFRESH, json={"refresh_token": acc.refresh_token})
    assert r.status_code == 200, r.text
    first = r.json()["data"]
    assert first["expires_in"] == 3600 and first["refresh_token"] != acc.refresh_token
    ok_headers = {"Authorization": f"Bearer {first['access_token']}"}
    assert (await client.get("/api/v1/workspaces", headers=ok_headers)).status_code == 200

    # Replaying the spent token is treated as theft: the whole session dies.
    assert_error(
        await client.post(REFRESH, json={"refresh_token": acc.refresh_token}),
        401,
        "AUTHENTICATION_FAILED",
    )
    assert_error(
        await client.post(REFRESH, json={"refresh_token": first["refresh_token"]}),
        401,
        "AUTHENTICATION_FAILED",
    )
    assert_error(
        await client.get("/api/v1/workspaces", headers=ok_headers), 401, "AUTHENTICATION_FAILED"
    )
    assert_error(
        await client.get("/api/v1/workspaces", headers=acc.headers), 401, "AUTHENTICATION_FAILED"
    )


async def test_access_token_is_not_a_refresh_token(
    client: httpx.AsyncClient, account: Account
) -> None:
    assert_error(
        await client.post(REFRESH, json={"refresh_token": account.access_token}),
        401,
        "AUTHENTICATION_FAILED",
    )


async def test_logout_revokes_the_session(client: httpx.AsyncClient) -> None:
    acc = await new_account(client)
    other_login = await client.post(LOGIN, json={"email": acc.email, "password": acc.password})
    other_headers = {"Authorization": f"Bearer {other_login.json()['data']['access_token']}"}
    r = await client.post(LOGOUT, headers=acc.headers)
    assert r.status_code == 204 and r.content == b""
    assert_error(
        await client.get("/api/v1/workspaces", headers=acc.headers), 401, "AUTHENTICATION_FAILED"
    )
    assert_error(
        await client.post(REFRESH, json={"refresh_token": acc.refresh_token}),
        401,
        "AUTHENTICATION_FAILED",
    )
    # Only that session: the user's other login still works.
    assert (await client.get("/api/v1/workspaces", headers=other_headers)).status_code == 200


async def test_logout_without_token_is_401(client: httpx.AsyncClient) -> None:
    assert_error(await client.post(LOGOUT), 401, "AUTHENTICATION_FAILED")


async def test_jwt_secret_is_generated_and_persisted(database_url: str, tmp_path: object) -> None:
    from pathlib import Path

    data_dir = Path(str(tmp_path))
    first = make_settings(database_url, data_dir).jwt_key()
    assert len(first) >= 32
    assert make_settings(database_url, data_dir).jwt_key() == first
    assert (data_dir / "jwt_secret").stat().st_mode & 0o077 == 0
    other = make_settings(database_url, data_dir / "elsewhere").jwt_key()
    assert other != first


async def test_tokens_from_another_installation_are_refused(
    database_url: str, tmp_path: object, account: Account
) -> None:
    from pathlib import Path

    foreign = create_app(make_settings(database_url, Path(str(tmp_path))))
    async with app_client(foreign) as c:
        assert_error(
            await c.get("/api/v1/workspaces", headers=account.headers), 401, "AUTHENTICATION_FAILED"
        )
