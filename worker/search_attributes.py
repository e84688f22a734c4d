"""Register the search attributes operators filter on in the Temporal UI (idempotent)."""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client

from domain.search_attributes import ALL_KEYS

log = logging.getLogger("aintandem.worker")


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for k in ALL_KEYS
        if k.name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
        log.info("registered search attributes %s", sorted(missing))
