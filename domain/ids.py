"""Resource ids (a prefix + 10 lowercase alphanumerics) and the workflow ids derived from them."""

from __future__ import annotations

import random
import re
import secrets
import string
from enum import StrEnum

_ALPHABET = string.ascii_lowercase + string.digits
_RANDOM_LEN = 10
_SPACE = len(_ALPHABET) ** _RANDOM_LEN


class Prefix(StrEnum):
    USER = "usr"
    WORKSPACE = "ws"
    SANDBOX = "sb"
    MESSAGE = "msg"
    COLLABORATION = "col"
    BROADCAST = "bc"
    SESSION = "ses"


_PATTERNS = {p: re.compile(rf"^{p.value}_[a-z0-9]{{{_RANDOM_LEN}}}$") for p in Prefix}


def new_id(prefix: Prefix, rng: random.Random | None = None) -> str:
    """A fresh id; a workflow passes its deterministic `workflow.random()` so replay agrees."""
    if rng is not None:
        return f"{prefix.value}_" + "".join(rng.choice(_ALPHABET) for _ in range(_RANDOM_LEN))
    # One draw from the OS (not one per character: ids are made on every accepted message).
    n = secrets.randbelow(_SPACE)
    chars = []
    for _ in range(_RANDOM_LEN):
        n, r = divmod(n, len(_ALPHABET))
        chars.append(_ALPHABET[r])
    return f"{prefix.value}_" + "".join(chars)


def is_valid(prefix: Prefix, value: str) -> bool:
    return bool(_PATTERNS[prefix].match(value))


# Workflow ids derive from resource ids, so a retried request or a restarted worker finds the
# same workflow instead of starting a second one.
def sandbox_workflow_id(sandbox_id: str) -> str:
    return f"sandbox-{sandbox_id}"


def inbox_workflow_id(sandbox_id: str) -> str:
    return f"inbox-{sandbox_id}"


def message_workflow_id(message_id: str) -> str:
    return f"message-{message_id}"


def collaboration_workflow_id(collaboration_id: str) -> str:
    return f"collaboration-{collaboration_id}"
