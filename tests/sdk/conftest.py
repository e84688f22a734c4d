"""The SDK suite drives a real `aintandem up` (Temporal, worker, API, Docker sandboxes) through
the public `aintandem` package only, exactly as a user's program would."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aintandem import AInTandemClient, AInTandemError, Sandbox, Workspace

from tests.live_stack import Stack

PASSWORD = "a-long-password-for-tests"
AGENT = {"primary_agent": {"name": "architect", "role": "Software Architect"}}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("sdk-stack"),
        AINTANDEM_RATE_LIMIT_AUTH_PER_MINUTE="100000",
        AINTANDEM_RATE_LIMIT_WORKSPACE_PER_HOUR="100000",
        AINTANDEM_RATE_LIMIT_SANDBOX_PER_HOUR="100000",
        AINTANDEM_RATE_LIMIT_MESSAGE_PER_HOUR="100000",
        AINTANDEM_MAX_WORKSPACES="100",
        AINTANDEM_SANDBOX_HEALTH_INTERVAL_SECONDS="2",
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()
        s.remove_sandboxes()  # what a test's own cleanup missed


@dataclass
class Account:
    email: str
    password: str
    name: str


async def register(api_url: str) -> Account:
    account = Account(f"sdk-{uuid.uuid4().hex[:10]}@example.com", PASSWORD, "SDK Tester")
    async with AInTandemClient(api_url) as anon:
        await anon.auth.register(account.email, account.password, account.name)
    return account


@pytest_asyncio.fixture(scope="session")
async def account(stack: Stack) -> Account:
    return await register(stack.api_url)


@pytest_asyncio.fixture
async def client(stack: Stack, account: Account) -> AsyncIterator[AInTandemClient]:
    async with AInTandemClient(stack.api_url, email=account.email, password=account.password) as c:
        yield c


@pytest_asyncio.fixture
async def workspace(client: AInTandemClient) -> AsyncIterator[Workspace]:
    """A fresh workspace, deleted (with its containers) after the test."""
    ws = await client.workspaces.create(name=f"sdk-{uuid.uuid4().hex[:6]}")
    try:
        yield ws
    finally:
        with contextlib.suppress(AInTandemError):
            await client.workspaces.delete(ws.id)


async def running_sandbox(client: AInTandemClient, workspace_id: str, name: str) -> Sandbox:
    sandbox = await client.sandboxes.create(
        workspace_id,
        name=name,
        agent_config={"primary_agent": {"name": f"{name}-agent", "role": "Engineer"}},
        resources={"memory_mb": 256, "cpu_cores": 0.5},
    )
    return await sandbox.wait_until("running", timeout=90)
