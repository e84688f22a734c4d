"""Password hashing (argon2id) and JWTs (HS256 pinned, exp/iat/jti/iss/aud/sid/typ)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from config.settings import Settings
from domain.errors import AuthenticationFailed
from domain.timeutil import utcnow

ALGORITHM = "HS256"
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verifying against this when the user does not exist keeps login timing the same either way,
# so response time does not reveal which emails are registered.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    session_id: str
    jti: str
    token_type: str
    expires_at: datetime


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self._key = settings.jwt_key()
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.access_ttl = settings.access_token_ttl_seconds
        self.refresh_ttl = settings.refresh_token_ttl_seconds

    def _issue(self, user_id: str, session_id: str, token_type: str, ttl: int) -> tuple[str, str]:
        now = utcnow()
        jti = secrets.token_urlsafe(18)
        claims = {
            "sub": user_id,
            "sid": session_id,
            "typ": token_type,
            "jti": jti,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=ttl)).timestamp()),
            "iss": self._issuer,
            "aud": self._audience,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), jti

    def issue_access(self, user_id: str, session_id: str) -> str:
        return self._issue(user_id, session_id, "access", self.access_ttl)[0]

    def issue_refresh(self, user_id: str, session_id: str) -> tuple[str, str]:
        return self._issue(user_id, session_id, "refresh", self.refresh_ttl)

    def decode(self, token: str, expected_type: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],  # pinned: "none" and RS/HS confusion are refused
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "jti", "sub", "sid", "typ", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationFailed("Token has expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed("Invalid token") from exc
        if claims.get("typ") != expected_type:
            raise AuthenticationFailed("Invalid token type")
        return TokenClaims(
            user_id=str(claims["sub"]),
            session_id=str(claims["sid"]),
            jti=str(claims["jti"]),
            token_type=str(claims["typ"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=utcnow().tzinfo),
        )
