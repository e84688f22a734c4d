"""Event-log inputs shared by the API and the workflows' store activities."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EventInput:
    channel: str  # messages | events | logs | metrics | collaboration
    event: str
    data: dict[str, Any] = field(default_factory=dict)
    workspace_id: str | None = None
    sandbox_id: str | None = None
    collaboration_id: str | None = None
