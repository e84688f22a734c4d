"""Auto-pagination over the spec's `page` / `per_page` list endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._http import HTTPCore
from ._models import PageMeta

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a list endpoint: its items and the pagination `meta`."""

    items: list[T]
    meta: PageMeta


class Paginator(Generic[T]):
    """Every item of a list endpoint, fetched page by page as you iterate.

    ``async for item in paginator`` streams the items; ``await paginator`` collects them all
    into a list; `page(n)` fetches one page. Iteration stops at the last page (`has_next`
    false), so items added meanwhile beyond it are not waited for.
    """

    def __init__(
        self,
        core: HTTPCore,
        path: str,
        convert: Callable[[Any], T],
        params: dict[str, Any] | None = None,
        per_page: int = 20,
        limit: int | None = None,
    ) -> None:
        self._core = core
        self._path = path
        self._convert = convert
        self._params = {k: v for k, v in (params or {}).items() if v is not None}
        self.per_page = per_page
        self.limit = limit
        #: Requests made so far (one per page).
        self.pages_fetched = 0

    async def page(self, number: int = 1) -> Page[T]:
        ans = await self._core.request(
            "GET", self._path, params={**self._params, "page": number, "per_page": self.per_page}
        )
        self.pages_fetched += 1
        return Page([self._convert(item) for item in ans.data or []], ans.page_meta())

    async def _iterate(self) -> AsyncIterator[T]:
        number, seen = 1, 0
        while True:
            current = await self.page(number)
            for item in current.items:
                if self.limit is not None and seen >= self.limit:
                    return
                seen += 1
                yield item
            if not current.meta.has_next or not current.items:
                return
            number += 1

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def to_list(self) -> list[T]:
        return [item async for item in self._iterate()]

    def __await__(self) -> Generator[Any, None, list[T]]:
        return self.to_list().__await__()


AwaitableList = Awaitable[list[T]]
