"""The synchronous twin of `AInTandemClient`: the same namespaces and methods, blocking.

It drives the asynchronous client on a private event loop in a background thread, so it also
works where an event loop is already running (notebooks, other frameworks)::

    from aintandem.sync import AInTandemClient

    with AInTandemClient(email="me@example.com", password="...") as client:
        for workspace in client.workspaces.list():
            print(workspace.name)

Awaitables become plain calls, async iterators (paginated lists, streams, `watch()`) become
iterators, and `Sandbox` / `Collaboration` handles come back with blocking methods.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from ._client import AInTandemClient as _AsyncClient
from ._pagination import Paginator
from ._resources import Collaboration, Sandbox

T = TypeVar("T")


class _Runner:
    """An event loop in a daemon thread; `run()` executes a coroutine there and blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="aintandem-sync", daemon=True
        )
        self._thread.start()
        self.closed = False

    def run(self, awaitable: Awaitable[T]) -> T:
        if self.closed:
            raise RuntimeError("the client is closed")

        async def main() -> T:
            return await awaitable

        future: Future[T] = asyncio.run_coroutine_threadsafe(main(), self.loop)
        return future.result()

    def close(self) -> None:
        if self.closed:
            return
        self.run(self.loop.shutdown_asyncgens())
        self.closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class SyncIterator(Iterator[T]):
    """A blocking iterator over an async iterator (closed with `close()` or at exhaustion)."""

    def __init__(self, runner: _Runner, source: Any) -> None:
        self._runner = runner
        self._source = source
        self._it = source.__aiter__()

    def __iter__(self) -> SyncIterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return _wrap(self._runner, self._runner.run(self._it.__anext__()))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        closer = getattr(self._it, "aclose", None) or getattr(self._source, "aclose", None)
        if closer is not None and not self._runner.closed:
            self._runner.run(closer())

    def __enter__(self) -> SyncIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)  # e.g. EventStream.last_event_id


class _Proxy:
    """Forwards attribute access to an async object, turning its coroutines into calls."""

    def __init__(self, runner: _Runner, target: Any) -> None:
        self._runner = runner
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr) or inspect.isclass(attr):
            return _wrap(self._runner, attr)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if isinstance(result, Paginator) or hasattr(result, "__anext__"):
                return _wrap(self._runner, result)
            if inspect.isawaitable(result):
                result = self._runner.run(result)
            return _wrap(self._runner, result)

        call.__name__ = name
        call.__doc__ = getattr(attr, "__doc__", None)
        return call

    def __repr__(self) -> str:
        return repr(self._target)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._target)) | set(super().__dir__()))


class SyncSandbox(_Proxy):
    """A `Sandbox` with blocking methods; `stream()` returns a blocking iterator."""

    @property
    def id(self) -> str:
        return str(self._target.id)


class SyncCollaboration(_Proxy):
    """A `Collaboration` with blocking methods; `watch()` returns a blocking iterator."""

    @property
    def id(self) -> str:
        return str(self._target.id)


class SyncPaginator(_Proxy):
    """Iterate for every item (page by page), or `to_list()`."""

    def __iter__(self) -> Iterator[Any]:
        return SyncIterator(self._runner, self._target)

    def to_list(self) -> list[Any]:
        return list(self)


def _wrap(runner: _Runner, value: Any) -> Any:
    if isinstance(value, Sandbox):
        return SyncSandbox(runner, value)
    if isinstance(value, Collaboration):
        return SyncCollaboration(runner, value)
    if isinstance(value, Paginator):
        return SyncPaginator(runner, value)
    if isinstance(value, list):
        return [_wrap(runner, item) for item in value]
    if hasattr(value, "__anext__"):
        return SyncIterator(runner, value)
    return value


class AInTandemSyncClient:
    """Blocking client with the same surface as `AInTandemClient` (see its documentation).

    Namespaces: `auth`, `workspaces`, `sandboxes`, `messages`, `collaborations`, `system`.
    Close it with `close()` or use it as a context manager.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **kwargs: Any):
        self._runner = _Runner()

        async def make() -> _AsyncClient:
            return _AsyncClient(base_url, api_key, **kwargs)

        self._async = self._runner.run(make())
        self.auth: Any = _Proxy(self._runner, self._async.auth)
        self.workspaces: Any = _Proxy(self._runner, self._async.workspaces)
        self.sandboxes: Any = _Proxy(self._runner, self._async.sandboxes)
        self.messages: Any = _Proxy(self._runner, self._async.messages)
        self.collaborations: Any = _Proxy(self._runner, self._async.collaborations)
        self.system: Any = _Proxy(self._runner, self._async.system)

    @property
    def base_url(self) -> str:
        return self._async.base_url

    @property
    def access_token(self) -> str | None:
        return self._async.access_token

    @property
    def refresh_token(self) -> str | None:
        return self._async.refresh_token

    def close(self) -> None:
        """Close the connection pool and stop the background loop."""
        if not self._runner.closed:
            self._runner.run(self._async.aclose())
            self._runner.close()

    def __enter__(self) -> AInTandemSyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


AInTandemClient = AInTandemSyncClient

__all__ = ["AInTandemClient", "AInTandemSyncClient", "SyncIterator", "SyncSandbox"]
