"""Shared field types and the pagination query parameters."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and no legitimate name or prompt contains one.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def reject_nul_deep(value: Any) -> Any:
    """Walk free-form JSON (message content, env vars) and refuse NUL characters anywhere."""
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(str(key))
            reject_nul_deep(item)
    elif isinstance(value, list):
        for item in value:
            reject_nul_deep(item)
    return value


SafeStr = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_no_nul),
]


def trimmed(max_length: int) -> Any:
    """Free text, surrounding whitespace removed, non-empty after that, no NUL. (Constraints
    written over `SafeStr` check the length before stripping, so `"   "` would pass.)"""
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length),
        AfterValidator(_no_nul),
    ]


Description = Annotated[str, StringConstraints(max_length=500), AfterValidator(_no_nul)]
JsonObject = Annotated[dict[str, Any], AfterValidator(reject_nul_deep)]

ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Pagination(BaseModel):
    page: int
    per_page: int
    sort: str
    order: Literal["asc", "desc"]
    search: str | None

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def pagination(
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
    sort: Annotated[str, Query(max_length=32)] = "created_at",
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    search: Annotated[str | None, Query(max_length=100)] = None,
) -> Pagination:
    if search is not None:
        _no_nul(search)
    return Pagination(page=page, per_page=per_page, sort=sort, order=order, search=search or None)
