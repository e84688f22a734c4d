"""Process settings, read from `AINTANDEM_*` environment variables and an optional `.env` file."""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.egress import DEFAULT_ENV_ALLOWLIST, ProviderAccess
from domain.offline_models import DEFAULT_OFFLINE_MODEL, OfflineModel, offline_model

VERSION = "0.1.0"
API_PREFIX = "/api/v1"


def _default_data_dir() -> Path:
    return Path.home() / ".aintandem"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AINTANDEM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""  # empty: an SQLite file in data_dir
    database_echo: bool = False

    # Empty means "start the embedded Temporal dev server" (aintandem up) or 127.0.0.1:7233.
    temporal_address: str = ""
    temporal_namespace: str = "default"
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    task_queue: str = "aintandem"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str = ""  # empty: http://localhost:{api_port}
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9464

    jwt_secret: SecretStr | None = None  # None: generated once and kept in data_dir
    jwt_issuer: str = "aintandem"
    jwt_audience: str = "aintandem-api"
    access_token_ttl_seconds: int = 3600
    refresh_token_ttl_seconds: int = 30 * 24 * 3600

    edition: str = "community"
    max_workspaces: int = 10
    max_sandboxes_per_workspace: int = 5
    # Comma-separated in the environment (README); NoDecode: the env source would otherwise
    # insist on JSON for a list and refuse to start on `a@example.com,b@example.com`.
    admin_emails: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Rate limits (requests per window); the spec's numbers are the defaults.
    rate_limit_enabled: bool = True
    rate_limit_auth_per_minute: int = 10
    rate_limit_workspace_per_hour: int = 100
    rate_limit_sandbox_per_hour: int = 200
    rate_limit_message_per_hour: int = 1000
    websocket_max_connections_per_user: int = 10

    # -- tenant isolation (see the README's security section) --
    # `${NAME}` in a workspace's provider api_key / MCP env resolves only for these names: any
    # other name is refused at PUT /config (else any user could read the worker's environment).
    provider_env_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ENV_ALLOWLIST)
    )
    # Hosts (names, IPs or CIDRs) a provider base_url may name although they are loopback,
    # link-local or private: a local model server is an operator's choice, never a user's.
    provider_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Client addresses whose X-Forwarded-For/-Proto are believed (uvicorn's forwarded_allow_ips,
    # comma-separated, "*" for any). Empty: none, so the auth rate limit keys on the peer.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Temporal payloads are encrypted (AES-256-GCM) with this key (base64 of 32 bytes); None:
    # generated once into data_dir like the JWT secret. Older keys (comma-separated) still
    # decrypt, so a key can be rotated without losing histories.
    payload_key: SecretStr | None = None
    payload_old_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    payload_encryption: bool = True
    # Origins allowed to call the codec server (/api/v1/codec/*): the Temporal UI's. Empty: the
    # embedded UI's own origins (http://127.0.0.1:{temporal_ui_port}, http://localhost:…).
    codec_cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    sandbox_image: str = "aintandem/sandbox:latest"
    # The embedded model a workspace without a provider gets (domain/offline_models.py; short
    # names work: qwen-0.5b, qwen-1.5b, smollm2) and where installed models live (default:
    # inside this Python environment, e.g. .venv/share/aintandem/models).
    # The largest /workspace disk a user may ask for (resources.disk_mb): disk images are
    # sparse, so the operator decides how far the host's disk may be promised.
    sandbox_max_disk_mb: int = 10240
    # Whether workspaces may choose settings.egress "internet" (else only "none").
    sandbox_internet_egress_allowed: bool = True
    offline_model: str = DEFAULT_OFFLINE_MODEL
    models_dir: Path | None = None
    # How long a message waits for its target sandbox to run before it fails.
    message_max_wait_seconds: float = 300.0
    # Messages held by an approval_required policy rule expire (failed) when unanswered.
    message_approval_timeout_seconds: float = 24 * 3600.0
    # How often each sandbox's workflow checks health and samples metrics and logs.
    sandbox_health_interval_seconds: float = 10.0

    # WebSocket streams (/ws/...) and the event fan-out behind them.
    websocket_queue_size: int = 1000  # frames buffered per connection; beyond: dropped (1013)
    websocket_auth_timeout_seconds: float = 5.0  # for the first-message {"action": "auth"}
    websocket_ping_interval_seconds: float = 20.0
    websocket_session_check_seconds: float = 30.0  # how soon a logout closes open streams
    events_poll_interval_seconds: float = 0.15
    # PostgreSQL assigns ids before commit: how long a missing id may hold later events back.
    events_gap_timeout_seconds: float = 2.0
    events_notify_channel: str = "aintandem_events"
    # PostgreSQL with LISTEN up: NOTIFY wakes the bus; this slower poll is only a safety net.
    events_listen_poll_interval_seconds: float = 2.0

    @field_validator(
        "provider_env_allowlist",
        "provider_allowed_hosts",
        "forwarded_allow_ips",
        "payload_old_keys",
        "codec_cors_origins",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        """Comma-separated in the environment (a JSON list works too)."""
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        if isinstance(value, list):
            return [v.strip() for v in value if isinstance(v, str) and v.strip()]
        return value

    @field_validator("offline_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        try:
            return offline_model(value).name
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None

    @field_validator("admin_emails", mode="before")
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            # A JSON list works too.
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        if isinstance(value, list):
            return [e.strip().lower() for e in value if isinstance(e, str) and e.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'aintandem.db'}"

    @property
    def installation_id(self) -> str:
        """Stable per database: API and workers of one installation agree on it."""
        import hashlib

        return hashlib.sha256(self.resolved_database_url.encode()).hexdigest()[:12]

    @property
    def resolved_temporal_address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://localhost:{self.api_port}").rstrip("/")

    def jwt_key(self) -> str:
        """The signing secret: configured, or generated once and persisted (never a built-in)."""
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value():
            return self.jwt_secret.get_secret_value()
        return _persisted_secret(self.data_dir / "jwt_secret")

    def offline_model_spec(self) -> OfflineModel:
        return offline_model(self.offline_model)

    def resolved_models_dir(self) -> Path:
        return self.models_dir or default_models_dir()

    def offline_model_file(self, model: OfflineModel | None = None) -> Path:
        return self.resolved_models_dir() / (model or self.offline_model_spec()).file

    def provider_access(self) -> ProviderAccess:
        return ProviderAccess.of(self.provider_env_allowlist, self.provider_allowed_hosts)

    def payload_keys(self) -> list[bytes]:
        """AES-256 keys for Temporal payloads: the current one first (encrypts), then the old
        ones (decrypt only). Configured, or generated once into the data dir."""
        current = (
            self.payload_key.get_secret_value()
            if self.payload_key is not None and self.payload_key.get_secret_value()
            else _persisted_secret(
                self.data_dir / "payload_key",
                lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
            )
        )
        return [_aes_key(current)] + [_aes_key(k.get_secret_value()) for k in self.payload_old_keys]

    def resolved_codec_cors_origins(self) -> list[str]:
        return self.codec_cors_origins or [
            f"http://127.0.0.1:{self.temporal_ui_port}",
            f"http://localhost:{self.temporal_ui_port}",
        ]


def default_models_dir() -> Path:
    """Inside the Python environment that runs us (the project's .venv), so a clean clone's
    `make up` installs and finds its own models."""
    return Path(sys.prefix) / "share" / "aintandem" / "models"


def _aes_key(value: str) -> bytes:
    key = base64.b64decode(value.strip(), validate=True)
    if len(key) != 32:
        raise ValueError("a payload key is the base64 of exactly 32 bytes")
    return key


def _persisted_secret(path: Path, generate: Callable[[], str] | None = None) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate() if generate else secrets.token_urlsafe(48)
    # Written whole into a private temporary file, then linked into place: link() fails if the
    # name exists, so two processes starting together agree on one secret, and neither can
    # read the other's half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        os.chmod(tmp, 0o600)
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        os.unlink(tmp)
    return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
