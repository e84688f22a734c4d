"""The API's coalescing of inbox signals (api/inbox_signals.py), against a recording client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.inbox_signals import MAX_BATCH, InboxSignaler
from domain.messages import Envelope


class RecordingClient:
    """Stands in for temporalio's Client: records each start_workflow and blocks on a gate, so
    a test decides when an RPC "returns" and what arrives meanwhile."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.fail = fail

    async def start_workflow(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail

    def envelopes(self, i: int) -> list[Envelope]:
        args = self.calls[i]["start_signal_args"][0]
        return args if isinstance(args, list) else [args]


def _env(n: int) -> Envelope:
    return Envelope(f"msg_{n:010d}", 5, "2026-11-26T00:00:00+00:00")


def _signaler(client: RecordingClient) -> InboxSignaler:
    async def connect() -> Any:
        return client

    return InboxSignaler(connect, "tq", 300.0)


async def _settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_message_goes_alone_and_the_rest_wait_for_one_signal() -> None:
    client = RecordingClient()
    sig = _signaler(client)
    first = asyncio.create_task(sig.enqueue("sb_target0001", "ws_a", _env(0)))
    await _settle_loop()
    assert len(client.calls) == 1 and client.calls[0]["start_signal"] == "enqueue"
    rest = [asyncio.create_task(sig.enqueue("sb_target0001", "ws_a", _env(i))) for i in (1, 2, 3)]
    await _settle_loop()
    assert len(client.calls) == 1 and not first.done()  # still in flight: the rest queue
    client.gate.set()
    await asyncio.gather(first, *rest)
    assert [c["start_signal"] for c in client.calls] == ["enqueue", "enqueue_many"]
    assert [e.message_id for e in client.envelopes(1)] == [_env(i).message_id for i in (1, 2, 3)]
    assert client.calls[1]["id"] == "inbox-sb_target0001"


async def test_inboxes_are_signalled_independently_and_batches_are_capped() -> None:
    client = RecordingClient()
    sig = _signaler(client)
    tasks = [asyncio.create_task(sig.enqueue("sb_target0001", "ws_a", _env(0)))]
    await _settle_loop()
    tasks += [
        asyncio.create_task(sig.enqueue("sb_target0001", "ws_a", _env(i)))
        for i in range(1, MAX_BATCH + 6)
    ]
    tasks.append(asyncio.create_task(sig.enqueue("sb_target0002", "ws_a", _env(999))))
    await _settle_loop()
    # the second inbox did not wait for the first one's RPC
    assert [c["id"] for c in client.calls] == ["inbox-sb_target0001", "inbox-sb_target0002"]
    client.gate.set()
    await asyncio.gather(*tasks)
    sizes = [len(client.envelopes(i)) for i in range(len(client.calls))]
    assert sorted(sizes) == sorted([1, 1, MAX_BATCH, 5])
    sent = [e.message_id for i in range(len(client.calls)) for e in client.envelopes(i)]
    assert len(sent) == len(set(sent)) == MAX_BATCH + 7


async def test_a_refused_signal_fails_every_request_it_carried() -> None:
    client = RecordingClient(fail=RuntimeError("temporal down"))
    sig = _signaler(client)
    tasks = [asyncio.create_task(sig.enqueue("sb_target0001", "ws_a", _env(i))) for i in range(3)]
    await _settle_loop()
    client.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    client.fail = None  # Temporal is back: the next request is signalled normally
    await sig.enqueue("sb_target0001", "ws_a", _env(9))
    assert client.envelopes(len(client.calls) - 1)[0].message_id == _env(9).message_id


async def test_a_disconnected_client_does_not_cancel_the_signal_others_wait_on() -> None:
    client = RecordingClient()
    sig = _signaler(client)
    leaving = asyncio.create_task(sig.enqueue("sb_target0001", "ws_a", _env(0)))
    staying = asyncio.create_task(sig.enqueue("sb_target0001", "ws_a", _env(1)))
    await _settle_loop()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    client.gate.set()
    await staying
    assert [e.message_id for e in client.envelopes(0)] == [_env(0).message_id, _env(1).message_id]
