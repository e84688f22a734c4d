"""Chaos: the PostgreSQL connections drop and new ones are refused, then the database comes
back. Requests in between fail with 503 in the envelope (never a 500), and the API recovers
by itself (the pool's pre-ping replaces dead connections)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.engine import make_url

from api.app import create_app
from config.settings import Settings
from tests.conftest import PG_ADMIN_DSN, app_client, assert_error, new_account

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]


def _outage(dbname: str, refuse: bool) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(not refuse).lower()}')
        if refuse:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )


async def test_a_database_outage_is_a_503_and_the_api_recovers(settings: Settings) -> None:
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("the connection-drop drill needs PostgreSQL (SQLite has no connections)")
    dbname = make_url(settings.resolved_database_url).database
    assert dbname
    async with app_client(create_app(settings)) as client:
        acc = await new_account(client)
        url = "/api/v1/workspaces"
        assert (await client.get(url, headers=acc.headers)).status_code == 200
        _outage(dbname, refuse=True)
        try:
            for request in (
                client.get(url, headers=acc.headers),
                client.post(url, headers=acc.headers, json={"name": "during the outage"}),
            ):
                r = await request
                body = assert_error(r, 503, "SERVICE_UNAVAILABLE")
                assert r.headers["retry-after"] == "1"
                assert body["error"]["details"] == {"service": "database"}
        finally:
            _outage(dbname, refuse=False)
        r = await client.get(url, headers=acc.headers)
        assert r.status_code == 200, r.text
        # Nothing was half-written while the database was away.
        assert "during the outage" not in [w["name"] for w in r.json()["data"]]
        created = await client.post(url, headers=acc.headers, json={"name": "after"})
        assert created.status_code == 201, created.text
