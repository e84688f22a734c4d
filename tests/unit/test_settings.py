"""Settings from the environment, as the README documents them."""

from __future__ import annotations

import pytest

from config.settings import Settings


@pytest.mark.parametrize(
    "value",
    ["Admin@Example.com, ops@example.com", '["admin@example.com", "OPS@example.com"]'],
)
def test_admin_emails_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Comma-separated (the README's form; it used to stop the process with a SettingsError,
    the env source wanting JSON for a list) or a JSON list."""
    monkeypatch.setenv("AINTANDEM_ADMIN_EMAILS", value)
    assert Settings(_env_file=None).admin_emails == ["admin@example.com", "ops@example.com"]


def test_no_admin_emails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AINTANDEM_ADMIN_EMAILS", "")
    assert Settings(_env_file=None).admin_emails == []
