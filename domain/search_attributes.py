"""Search attributes on our workflows, so an operator finds them in the Temporal UI by id."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

WORKSPACE_ID = SearchAttributeKey.for_keyword("AintandemWorkspaceId")
SANDBOX_ID = SearchAttributeKey.for_keyword("AintandemSandboxId")
MESSAGE_ID = SearchAttributeKey.for_keyword("AintandemMessageId")
COLLABORATION_ID = SearchAttributeKey.for_keyword("AintandemCollaborationId")
# Set on a message's delivery workflow when the delivery fails (`failed` or `timeout`, as the
# message's status), so one query finds every failed delivery: AintandemMessageStatus="failed".
MESSAGE_STATUS = SearchAttributeKey.for_keyword("AintandemMessageStatus")

ALL_KEYS = (WORKSPACE_ID, SANDBOX_ID, MESSAGE_ID, COLLABORATION_ID, MESSAGE_STATUS)
