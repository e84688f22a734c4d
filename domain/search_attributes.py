"""Search attributes on our workflows, so an operator finds them in the Temporal UI by id."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

WORKSPACE_ID = SearchAttributeKey.for_keyword("AintandemWorkspaceId")
SANDBOX_ID = SearchAttributeKey.for_keyword("AintandemSandboxId")
MESSAGE_ID = SearchAttributeKey.for_keyword("AintandemMessageId")
COLLABORATION_ID = SearchAttributeKey.for_keyword("AintandemCollaborationId")

ALL_KEYS = (WORKSPACE_ID, SANDBOX_ID, MESSAGE_ID, COLLABORATION_ID)
