"""SQLAlchemy 2 models: the read model the API answers from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from domain.timeutil import utcnow

# Deterministic constraint names so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
EventIdType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _ts(nullable: bool = False, default: bool = False) -> Any:
    return mapped_column(
        DateTime(timezone=True), nullable=nullable, default=utcnow if default else None
    )


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    organization: Mapped[str | None] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = _ts(default=True)
    updated_at: Mapped[datetime] = _ts(default=True)


class AuthSession(Base):
    """One login. Its refresh tokens form a family; revoking the session revokes all of them."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = _ts(default=True)
    expires_at: Mapped[datetime] = _ts()
    revoked_at: Mapped[datetime | None] = _ts(nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    issued_at: Mapped[datetime] = _ts(default=True)
    expires_at: Mapped[datetime] = _ts()
    used_at: Mapped[datetime | None] = _ts(nullable=True)


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (Index("ix_workspaces_owner_created", "owner_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    llm_providers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    mcp_servers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    collaboration_policy: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = _ts(default=True)
    updated_at: Mapped[datetime] = _ts(default=True)


class Sandbox(Base):
    __tablename__ = "sandboxes"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_sandboxes_workspace_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="provisioning", index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    agent_config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    environment_variables: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    mcp_servers: Mapped[list[str]] = mapped_column(JSONType, default=list)
    health_status: Mapped[str] = mapped_column(String(16), default="unknown")
    last_heartbeat: Mapped[datetime | None] = _ts(nullable=True)
    restart_count: Mapped[int] = mapped_column(Integer, default=0)
    # The workflow numbers its transitions; a write older than the stored one is ignored, so a
    # late activity retry can never move the read model backwards.
    status_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = _ts(default=True)
    updated_at: Mapped[datetime] = _ts(default=True)
    started_at: Mapped[datetime | None] = _ts(nullable=True)


class MetricsSample(Base):
    """One resource-usage sample of a sandbox, taken by its workflow's health loop."""

    __tablename__ = "metrics_samples"
    __table_args__ = (
        Index("ix_metrics_samples_sandbox_sampled", "sandbox_id", "sampled_at"),
        Index("ix_metrics_samples_workspace_sampled", "workspace_id", "sampled_at"),
    )

    id: Mapped[int] = mapped_column(EventIdType, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(String(32))
    sampled_at: Mapped[datetime] = _ts()
    cpu_percent: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[float] = mapped_column(Float)
    memory_limit_mb: Mapped[float] = mapped_column(Float)
    memory_percent: Mapped[float] = mapped_column(Float)
    disk_mb: Mapped[float] = mapped_column(Float)
    network_in_bytes: Mapped[int] = mapped_column(BigInteger)
    network_out_bytes: Mapped[int] = mapped_column(BigInteger)
    pids: Mapped[int] = mapped_column(Integer)


class Event(Base):
    """The durable event log: every state change, with a monotonic id clients resume from."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_sandbox_id_id", "sandbox_id", "id"),
        Index("ix_events_workspace_id_id", "workspace_id", "id"),
        Index("ix_events_collaboration_id_id", "collaboration_id", "id"),
    )

    id: Mapped[int] = mapped_column(EventIdType, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = _ts(default=True)
    workspace_id: Mapped[str | None] = mapped_column(String(32))
    sandbox_id: Mapped[str | None] = mapped_column(String(32))
    collaboration_id: Mapped[str | None] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class Message(Base):
    """One agent-to-agent message; its status is the delivery's read model."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_to_created", "to_sandbox_id", "created_at"),
        Index("ix_messages_from_created", "from_sandbox_id", "created_at"),
        Index("ix_messages_workspace_created", "workspace_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # Sandboxes may be deleted later; their messages stay readable from the other side.
    from_sandbox_id: Mapped[str | None] = mapped_column(String(32))
    from_agent: Mapped[str | None] = mapped_column(String(100))
    to_sandbox_id: Mapped[str] = mapped_column(String(32))
    to_agent: Mapped[str | None] = mapped_column(String(100))
    message_type: Mapped[str] = mapped_column(String(16))
    content: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    requires_response: Mapped[bool] = mapped_column(default=False)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=30)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    status_reason: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    broadcast_id: Mapped[str | None] = mapped_column(String(32), index=True)
    collaboration_id: Mapped[str | None] = mapped_column(String(32), index=True)
    response_message_id: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = _ts(default=True)
    delivered_at: Mapped[datetime | None] = _ts(nullable=True)
    responded_at: Mapped[datetime | None] = _ts(nullable=True)
    failed_at: Mapped[datetime | None] = _ts(nullable=True)


class Collaboration(Base):
    """A multi-agent collaboration: the read model of its `CollaborationWorkflow`."""

    __tablename__ = "collaborations"
    __table_args__ = (Index("ix_collaborations_workspace_created", "workspace_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(16))
    orchestrator_sandbox_id: Mapped[str] = mapped_column(String(32))
    orchestrator_agent: Mapped[str] = mapped_column(String(100))
    # [{sandbox_id, name, agent}] as resolved at the request (sandboxes may be renamed later).
    participants: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    requested_deliverables: Mapped[list[str]] = mapped_column(JSONType, default=list)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    estimated_duration_seconds: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="initializing", index=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    deliverables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The workflow numbers its snapshots; an older (retried) write never overwrites a newer one.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = _ts(default=True)
    started_at: Mapped[datetime | None] = _ts(nullable=True)
    updated_at: Mapped[datetime] = _ts(default=True)
    completed_at: Mapped[datetime | None] = _ts(nullable=True)


class IdempotencyKey(Base):
    """A POST sent with an Idempotency-Key: reserved (in flight, no answer yet) by the request
    that inserts the row first — the primary key makes that atomic — then the first answer,
    replayed for retries. See api/idempotency.py."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    route: Mapped[str] = mapped_column(String(255))
    # sha256 of route + canonical body: the same key with another body is refused (422).
    # NULL only on rows written before migration 0006.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Both NULL while the first request is in flight.
    status_code: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _ts(default=True)
