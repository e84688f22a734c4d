"""X-Forwarded-For must not let a client pick the address the auth rate limit keys on.

The API is started exactly as `aintandem api` starts it (`python -m cli.main api`, a real uvicorn
on loopback), so the test sees the server's real proxy-header handling: by default no peer is
trusted (uvicorn's own default trusts 127.0.0.1, which made every local client — and every
client of a proxy that passes the header through — able to reset its bucket per request);
`AINTANDEM_FORWARDED_ALLOW_IPS` names the proxies whose header is believed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from store.migrate import upgrade
from tests.live_stack import ROOT, free_port

pytestmark = pytest.mark.security

AUTH_LIMIT = 10  # the spec's 10 requests/minute, the default


@contextmanager
def api_server(tmp_path: Path, **env: str) -> Iterator[str]:
    """`python -m cli.main api` on a free loopback port; yields its base URL once it serves."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AINTANDEM_")}
    full_env.pop("FORWARDED_ALLOW_IPS", None)
    full_env.update(
        AINTANDEM_DATA_DIR=str(tmp_path),
        AINTANDEM_DATABASE_URL=url,
        AINTANDEM_API_HOST="127.0.0.1",
        AINTANDEM_API_PORT=str(port),
        AINTANDEM_TEMPORAL_ADDRESS="127.0.0.1:1",
        AINTANDEM_RATE_LIMIT_AUTH_PER_MINUTE=str(AUTH_LIMIT),
        **env,
    )
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "api"],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # uvicorn binds once the app's lifespan has started
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/metrics", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the API did not start:\n{log.read_text()}"
            time.sleep(0.1)
        yield f"{base}/api/v1"
    finally:
        proc.terminate()
        proc.wait(30)


def _login(client: httpx.Client, forwarded_for: str) -> int:
    r = client.post(
        "/auth/login",
        json={"email": "nobody@example.com", "password": "wrong password"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    assert r.status_code in (401, 429), r.text
    return r.status_code


def test_forwarded_for_is_ignored_by_default(tmp_path: Path) -> None:
    """A new X-Forwarded-For per attempt does not get a new bucket: the limit keys on the peer."""
    with api_server(tmp_path) as api, httpx.Client(base_url=api, timeout=10) as client:
        statuses = [_login(client, f"198.51.100.{i}") for i in range(AUTH_LIMIT + 2)]
    assert statuses[:AUTH_LIMIT] == [401] * AUTH_LIMIT
    assert statuses[AUTH_LIMIT:] == [429, 429], statuses


def test_forwarded_for_is_honoured_from_a_configured_proxy(tmp_path: Path) -> None:
    """Behind a proxy named in AINTANDEM_FORWARDED_ALLOW_IPS each real client has its bucket."""
    with (
        api_server(tmp_path, AINTANDEM_FORWARDED_ALLOW_IPS="127.0.0.1") as api,
        httpx.Client(base_url=api, timeout=10) as client,
    ):
        distinct = [_login(client, f"198.51.100.{i}") for i in range(AUTH_LIMIT + 2)]
        same = [_login(client, "203.0.113.7") for _ in range(AUTH_LIMIT + 1)]
    assert distinct == [401] * (AUTH_LIMIT + 2)
    assert same == [401] * AUTH_LIMIT + [429], same
