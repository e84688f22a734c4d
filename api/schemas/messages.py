"""Agent-communication requests and responses (spec section 4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from api.schemas.common import JsonObject, Name, RequestModel, SafeStr

MessageType = Literal["request", "response", "notification", "command"]
# A delivery's status (domain.messages.MessageStatus), as the list filters accept it.
MessageStatusName = Literal[
    "queued", "pending_approval", "delivered", "responded", "failed", "timeout"
]


class MessageSend(RequestModel):
    to_sandbox: Annotated[SafeStr, StringConstraints(min_length=1, max_length=100)]
    to_agent: Name | None = None
    from_agent: Name | None = None
    message_type: MessageType = "request"
    content: JsonObject
    priority: Annotated[int, Field(ge=0, le=9)] = 5
    requires_response: bool = False
    timeout: Annotated[int, Field(ge=1, le=300)] = 30
    correlation_id: Annotated[SafeStr, StringConstraints(min_length=1, max_length=64)] | None = None


class BroadcastSend(RequestModel):
    from_sandbox: Annotated[SafeStr, StringConstraints(min_length=1, max_length=100)]
    message_type: Literal["notification", "command"] = "notification"
    content: JsonObject
    priority: Annotated[int, Field(ge=0, le=9)] = 5
    exclude_self: bool = True


class MessageAccepted(BaseModel):
    message_id: str
    status: str
    timestamp: str


class BroadcastAccepted(BaseModel):
    broadcast_id: str
    recipients: list[str]
    denied: list[dict[str, str]] = []
    message_ids: list[str]
    timestamp: str


class MessageOut(BaseModel):
    message_id: str
    from_sandbox: str | None
    from_agent: str | None
    to_sandbox: str
    to_agent: str | None
    message_type: str
    content: dict[str, Any]
    priority: int
    requires_response: bool
    status: str
    status_reason: str | None
    correlation_id: str | None
    broadcast_id: str | None
    attempts: int
    timestamp: str
    delivered_at: str | None
    responded_at: str | None


class MessageDetail(MessageOut):
    response: dict[str, Any] | None


class MessageListMeta(BaseModel):
    """What the list holds and which filters made it (echoed so a reader can tell)."""

    total: int = Field(description="messages matching the filters (may exceed `returned`)")
    returned: int
    since: str | None
    direction: Literal["sent", "received", "both"] | None = None  # per-sandbox list only
    status: list[MessageStatusName] | None = None
    sandbox_id: str | None = None  # workspace list only: either end


class MessageList(BaseModel):
    messages: list[MessageOut]
    meta: MessageListMeta
