"""The API's Temporal client: connected lazily and shared, so the API starts (and reports the
outage in /system/health) even while Temporal is still coming up."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client

from api.inbox_signals import InboxSignaler
from config.payload_codec import EncryptionCodec, codec, data_converter
from config.settings import Settings


class TemporalGateway:
    def __init__(self, settings: Settings) -> None:
        self._address = settings.resolved_temporal_address
        self._namespace = settings.temporal_namespace
        # One codec for the client and the codec server (api/routers/codec.py): what the UI
        # decodes is exactly what this client encrypts.
        self.codec: EncryptionCodec = codec(settings)
        self._data_converter = data_converter(settings, self.codec)
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self.inbox = InboxSignaler(
            self.client, settings.task_queue, settings.message_max_wait_seconds
        )

    async def client(self, timeout: float = 5.0) -> Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await asyncio.wait_for(
                        Client.connect(
                            self._address,
                            namespace=self._namespace,
                            data_converter=self._data_converter,
                        ),
                        timeout,
                    )
        return self._client

    async def healthy(self, timeout: float = 2.0) -> bool:
        try:
            client = await self.client(timeout)
            return await client.service_client.check_health(timeout=timedelta(seconds=timeout))
        except Exception:
            return False
