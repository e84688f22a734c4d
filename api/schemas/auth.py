"""Authentication requests and responses (spec section 1)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, EmailStr, StringConstraints

from api.schemas.common import Name, RequestModel, SafeStr

Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]


class RegisterRequest(RequestModel):
    email: EmailStr
    password: Password
    name: Name
    organization: Annotated[SafeStr, StringConstraints(max_length=100)] | None = None


class LoginRequest(RequestModel):
    email: Annotated[SafeStr, StringConstraints(min_length=1, max_length=320)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class RefreshRequest(RequestModel):
    refresh_token: Annotated[SafeStr, StringConstraints(min_length=1, max_length=4096)]


class UserOut(BaseModel):
    user_id: str
    email: str
    name: str


class RegisteredUser(UserOut):
    organization: str | None
    created_at: str


class LoginResult(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    user: UserOut


class RefreshResult(BaseModel):
    access_token: str
    # Rotation: the presented refresh token is now spent; use this one next time.
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
