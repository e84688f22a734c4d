"""Shared field types and the pagination query parameters."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from domain.errors import ValidationFailed


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


# Invisible or non-characters in a name: controls (Cc), format characters (Cf: bidi overrides
# such as U+202E, zero-width space/joiners, BOM, soft hyphen), private use (Co), lone
# surrogates (Cs), line/paragraph separators (Zl, Zp). With them two names that display the
# same can coexist (`dup` and `dup\u200b`) and a name can render reversed in a log or a UI.
_REFUSED_IN_NAMES = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp"}


def _plain_name(value: str) -> str:
    """A name is refused, never silently altered: no invisible characters, and composed
    (NFC) so that `é` as one code point and as `e` + U+0301 cannot be two different names."""
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_IN_NAMES:
            raise ValueError(
                f"must not contain control, format or invisible characters (U+{ord(ch):04X})"
            )
    if not unicodedata.is_normalized("NFC", value):
        raise ValueError("must be in Unicode normalization form NFC (composed characters)")
    return value


SafeStr = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_plain_name),
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
    if search is not None and "\x00" in search:
        # (api/input_guard.py refuses every control character in a query before this.)
        raise ValidationFailed(
            "Request validation failed",
            {
                "fields": [
                    {
                        "field": "search",
                        "message": "must not contain NUL characters",
                        "location": "query",
                    }
                ]
            },
        )
    return Pagination(page=page, per_page=per_page, sort=sort, order=order, search=search or None)
