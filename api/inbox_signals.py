"""Coalesced inbox signals: the messages accepted for one inbox while its previous
signal-with-start is in flight go together in the next one (`enqueue_many`).

Under load this turns N signal RPCs (and N signal events in the inbox's history, each waking a
workflow task) into one per round trip, at no cost when idle: the first message of a quiet
inbox is signalled at once. A request still answers 202 only after Temporal acknowledged the
signal that carries its message, so "accepted" keeps meaning "durably enqueued".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio.client import Client

from domain.messages import Envelope, inbox_signal_with_start

MAX_BATCH = 100  # envelopes per signal: keeps a payload small (≈ 15 KB) and the history even


@dataclass
class _Inbox:
    workspace_id: str
    waiting: list[tuple[Envelope, asyncio.Future[None]]] = field(default_factory=list)
    flushing: bool = False


class InboxSignaler:
    def __init__(
        self, client: Callable[[], Awaitable[Client]], task_queue: str, max_wait_seconds: float
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._max_wait_seconds = max_wait_seconds
        self._inboxes: dict[str, _Inbox] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def enqueue(self, to_sandbox_id: str, workspace_id: str, env: Envelope) -> None:
        """Return once Temporal has the signal carrying `env`; raise what the RPC raised."""
        inbox = self._inboxes.setdefault(to_sandbox_id, _Inbox(workspace_id))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        inbox.waiting.append((env, done))
        if not inbox.flushing:
            inbox.flushing = True
            task = asyncio.create_task(self._flush(to_sandbox_id, inbox))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # shield: a client that disconnects must not cancel the flush others wait on
        await asyncio.shield(done)

    async def _flush(self, to_sandbox_id: str, inbox: _Inbox) -> None:
        batch: list[tuple[Envelope, asyncio.Future[None]]] = []
        try:
            while inbox.waiting:
                batch, inbox.waiting = inbox.waiting[:MAX_BATCH], inbox.waiting[MAX_BATCH:]
                envs = [env for env, _ in batch]
                try:
                    client = await self._client()
                    await client.start_workflow(
                        **inbox_signal_with_start(
                            to_sandbox_id=to_sandbox_id,
                            workspace_id=inbox.workspace_id,
                            envelope=envs if len(envs) > 1 else envs[0],
                            task_queue=self._task_queue,
                            max_wait_seconds=self._max_wait_seconds,
                        )
                    )
                except Exception as exc:
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
                batch = []
        finally:
            # Normally nothing is left; on cancellation (shutdown) no one would send the rest.
            _settle(batch + inbox.waiting, RuntimeError("the API is shutting down"))
            inbox.waiting, inbox.flushing = [], False
            self._inboxes.pop(to_sandbox_id, None)


def _settle(batch: list[tuple[Envelope, asyncio.Future[None]]], exc: BaseException | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)
