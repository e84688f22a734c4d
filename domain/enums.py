"""Enums from the spec and constraints.md."""

from __future__ import annotations

from enum import StrEnum


class Edition(StrEnum):
    COMMUNITY = "community"
    ENTERPRISE = "enterprise"


class UserRole(StrEnum):
    USER = "user"
    ADMIN = "admin"


class LLMProviderName(StrEnum):
    QWEN = "qwen"
    GLM = "glm"
    CLAUDE = "claude"
    OPENAI = "openai"


class PolicyMode(StrEnum):
    ALLOW_ALL = "allow_all"
    ALLOW_LIST = "allow_list"
    DENY_LIST = "deny_list"


class SandboxStatus(StrEnum):
    PROVISIONING = "provisioning"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RESTARTING = "restarting"
    ERROR = "error"
    DELETED = "deleted"


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class McpTransport(StrEnum):
    STDIO = "stdio"
    SSE = "sse"


SUPPORTED_MCP_SERVERS = ("filesystem", "web-search", "github")
