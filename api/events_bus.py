"""Fan-out of the durable event log to WebSocket subscribers, one bus per API process.

One task reads the rows appended to `events` after the last one it dispatched (`WHERE id > cursor
ORDER BY id`), encodes each once and offers it to the in-memory subscriptions that follow its
sandbox, its collaboration, or everything (the admin stream). On SQLite it polls at a short
interval; on PostgreSQL a dedicated connection `LISTEN`s, so the `NOTIFY` of the insert trigger
wakes it at once, and polling is only a slow safety net (short again while LISTEN is down).

The table, not the bus, is the source of truth: a subscriber that falls behind is dropped (its
queue is bounded) and resumes from the last id it saw, replayed from the table. `subscribe` returns
the cursor at the moment of registration, so "replay (after, cursor] then live" has neither a gap
nor a duplicate at the switch-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.metrics import EVENTS_PUBLISHED
from config.settings import Settings
from domain.timeutil import iso, utcnow
from store import events as event_log
from store.db import is_sqlite
from store.models import Event

log = logging.getLogger("aintandem.api.events")

# Channels a client may (un)subscribe to; the system stream also carries any other channel.
CHANNELS = ("messages", "events", "logs", "metrics")
PAGE = 500
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Frame:
    """One server → client frame, encoded once and shared by every subscriber."""

    id: int | None
    channel: str
    text: str


def frame(
    channel: str,
    event: str,
    data: object,
    *,
    event_id: int | None = None,
    timestamp: str | None = None,
) -> Frame:
    body = {
        "channel": channel,
        "event": event,
        "data": data,
        "timestamp": timestamp or iso(utcnow()),
        "id": event_id,
    }
    return Frame(event_id, channel, encode_json(body))


def _finite(value: object) -> object:
    """`value` with every NaN/Infinity float (at any depth) replaced by None: JSON has no
    such numbers, and a bare `NaN` in a frame breaks every strict client's parser."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {
            (str(k) if isinstance(k, float) and not math.isfinite(k) else k): _finite(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def encode_json(value: object) -> str:
    """Compact, strict JSON for a frame: non-finite floats become null, anything else
    json cannot encode (datetimes, ids) its str(); never a bare NaN/Infinity."""
    try:
        return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: rare, so only then walk the value
        return json.dumps(_finite(value), separators=(",", ":"), default=str, allow_nan=False)


def event_frame(row: Event) -> Frame:
    return frame(row.channel, row.event, row.data, event_id=row.id, timestamp=iso(row.created_at))


@dataclass(frozen=True)
class StreamScope:
    """What a subscription follows: one sandbox, one collaboration, or (neither) everything."""

    sandbox_id: str | None = None
    collaboration_id: str | None = None


class Subscription:
    """A bounded per-connection queue the bus offers frames to, without ever blocking."""

    def __init__(
        self, scope: StreamScope, max_queue: int, channels: Iterable[str] | None = None
    ) -> None:
        self.scope = scope
        self.channels: set[str] | None = None if channels is None else set(channels)  # None: all
        self._frames: deque[Frame] = deque()
        self._max = max_queue
        self._wakeup = asyncio.Event()
        self.ended = asyncio.Event()
        self.end_code = 1000
        self.end_reason = ""

    def wants(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels

    def offer(self, item: Frame) -> bool:
        """Queue a frame; False (and nothing queued) when the queue is full."""
        if self.ended.is_set():
            return True
        if not self.wants(item.channel):
            return True
        if len(self._frames) >= self._max:
            return False
        self._frames.append(item)
        self._wakeup.set()
        return True

    def end(self, code: int, reason: str) -> None:
        if not self.ended.is_set():
            self.end_code, self.end_reason = code, reason
            self.ended.set()
            self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    async def wait(self) -> None:
        await self._wakeup.wait()
        self._wakeup.clear()

    def drain(self) -> list[Frame]:
        items = list(self._frames)
        self._frames.clear()
        return items

    def clear(self) -> None:
        self._frames.clear()


@dataclass
class ConnectionCounter:
    """Open WebSocket connections per user in this process."""

    counts: Counter[str] = field(default_factory=Counter)

    def acquire(self, user_id: str, limit: int) -> bool:
        if self.counts[user_id] >= limit:
            return False
        self.counts[user_id] += 1
        return True

    def release(self, user_id: str) -> None:
        self.counts[user_id] -= 1
        if self.counts[user_id] <= 0:
            del self.counts[user_id]


class EventBus:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._url = settings.resolved_database_url
        # SQLite has one writer at a time, so ids commit in order and a hole never fills later.
        # PostgreSQL hands out ids before commit: a hole may be a transaction still in flight.
        self._ordered_commits = is_sqlite(self._url)
        self.cursor = 0  # the last event id dispatched (or given up on as a hole)
        self._ready = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._by_sandbox: dict[str, set[Subscription]] = {}
        self._by_collaboration: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        self._hole_since: float | None = None
        self.connections = ConnectionCounter()
        self.listening = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="events-bus"))
        if not self._ordered_commits:
            self._tasks.append(asyncio.create_task(self._listen(), name="events-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for sub in list(self._subscriptions()):
            sub.end(1012, "server shutting down")

    async def ready(self) -> None:
        """Until the cursor is known (the database answered once)."""
        await self._ready.wait()

    def notify(self) -> None:
        """Wake the dispatcher now (what a `NOTIFY` does on PostgreSQL)."""
        self._wakeup.set()

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, sub: Subscription) -> int:
        """Register; every event with an id above the returned cursor will be offered to it."""
        scope = sub.scope
        if scope.sandbox_id is not None:
            self._by_sandbox.setdefault(scope.sandbox_id, set()).add(sub)
        elif scope.collaboration_id is not None:
            self._by_collaboration.setdefault(scope.collaboration_id, set()).add(sub)
        else:
            self._everything.add(sub)
        return self.cursor

    def unsubscribe(self, sub: Subscription) -> None:
        scope = sub.scope
        if scope.sandbox_id is not None:
            _discard(self._by_sandbox, scope.sandbox_id, sub)
        elif scope.collaboration_id is not None:
            _discard(self._by_collaboration, scope.collaboration_id, sub)
        else:
            self._everything.discard(sub)

    def _subscriptions(self) -> Iterable[Subscription]:
        yield from self._everything
        for subs in (*self._by_sandbox.values(), *self._by_collaboration.values()):
            yield from subs

    async def replay(self, scope: StreamScope, after: int, upto: int) -> AsyncIterator[list[Frame]]:
        """The scope's events with `after < id <= upto`, in order, a page at a time."""
        last = after
        while last < upto:
            async with self._sessions() as session:
                rows = await event_log.after(
                    session,
                    last,
                    sandbox_id=scope.sandbox_id,
                    collaboration_id=scope.collaboration_id,
                    limit=PAGE,
                )
            page = [event_frame(r) for r in rows if r.id <= upto]
            if page:
                yield page
            if len(rows) < PAGE or rows[-1].id >= upto:
                return
            last = rows[-1].id

    # -- dispatch -------------------------------------------------------------------------------

    async def _run(self) -> None:
        interval = self._settings.events_poll_interval_seconds
        while True:
            try:
                if not self._ready.is_set():
                    self.cursor = await self._start_cursor()
                    self._ready.set()
                while await self._poll():
                    pass  # a full page: more are waiting
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event bus: reading the event log failed; retrying")
                await asyncio.sleep(max(interval, 1.0))
                continue
            # With LISTEN up, a NOTIFY (migration 0003's trigger) wakes us: polling is only the
            # safety net. A pending hole is re-read soon, as a rollback never notifies.
            wait = interval
            if self.listening and self._hole_since is None:
                wait = max(interval, self._settings.events_listen_poll_interval_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)
            self._wakeup.clear()

    async def _start_cursor(self) -> int:
        """Where dispatch starts: the newest event, on SQLite. On PostgreSQL an id below the
        newest committed one may still be in flight (a worker writing while this API starts):
        start below every event of the last `events_gap_timeout_seconds` and let the hole rule
        deliver them in order, as it does for holes met later (no subscriber exists yet, so
        nothing is sent twice)."""
        stmt = select(func.max(Event.id))
        if not self._ordered_commits:
            cutoff = utcnow() - timedelta(seconds=self._settings.events_gap_timeout_seconds)
            stmt = stmt.where(Event.created_at < cutoff)
        async with self._sessions() as session:
            return await session.scalar(stmt) or 0

    async def _poll(self) -> bool:
        """Dispatch what is new; True when a full page was read (call again at once)."""
        async with self._sessions() as session:
            rows = await event_log.after(session, self.cursor, limit=PAGE)
        for row in rows:
            if row.id != self.cursor + 1 and not self._hole_expired():
                return False  # wait for the missing id to commit (or for the hole to expire)
            self._hole_since = None
            self._dispatch(row)
            self.cursor = row.id
        return len(rows) == PAGE

    def _hole_expired(self) -> bool:
        # A hole below a committed id is either a transaction still committing or an id that
        # will never exist (rolled back). Hold later events back, in order, for a bounded time.
        if self._ordered_commits:
            return True
        now = time.monotonic()
        if self._hole_since is None:
            self._hole_since = now
        return now - self._hole_since >= self._settings.events_gap_timeout_seconds

    def _dispatch(self, row: Event) -> None:
        EVENTS_PUBLISHED.labels(row.channel).inc()
        targets: list[Subscription] = list(self._everything)
        if row.sandbox_id is not None:
            targets.extend(self._by_sandbox.get(row.sandbox_id, ()))
        if row.collaboration_id is not None:
            targets.extend(self._by_collaboration.get(row.collaboration_id, ()))
        if not targets:
            return
        item = event_frame(row)
        for sub in targets:
            if not sub.offer(item):
                self.unsubscribe(sub)
                sub.end(1013, "slow consumer: queue full; reconnect with last_event_id")

    # -- PostgreSQL LISTEN ----------------------------------------------------------------------

    async def _listen(self) -> None:
        channel = self._settings.events_notify_channel
        if not _IDENTIFIER.match(channel):
            log.error("event bus: invalid notify channel %r; polling only", channel)
            return
        dsn = make_url(self._url).set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 1.0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
                try:
                    await conn.execute(f"LISTEN {channel}")
                    self.listening, backoff = True, 1.0
                    self._wakeup.set()  # catch up on anything inserted while not listening
                    async for _ in conn.notifies():
                        self._wakeup.set()
                finally:
                    self.listening = False
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event bus: LISTEN %s failed (%s); polling meanwhile", channel, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)


def _discard(index: dict[str, set[Subscription]], key: str, sub: Subscription) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del index[key]
