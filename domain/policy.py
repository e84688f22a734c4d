"""Collaboration policy: may sandbox A send this kind of message to sandbox B? (pure)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    approval_required: bool = False


def _matches(rule: dict[str, Any], sender: str, target: str, message_type: str) -> bool:
    frm = rule.get("from", "*")
    to = rule.get("to", "*")
    targets = to if isinstance(to, list) else [to]
    types = rule.get("message_types") or []
    return (
        (frm in ("*", sender))
        and ("*" in targets or target in targets)
        and (not types or message_type in types)
    )


def decide(policy: dict[str, Any] | None, sender: str, target: str, message_type: str) -> Decision:
    """Rules name sandboxes by name (or `*`); allow_list needs a matching rule, deny_list
    refuses on one; a matching rule may ask for the workspace owner's approval."""
    policy = policy or {}
    mode = policy.get("mode", "allow_all")
    rules = policy.get("rules") or []
    hit = next((r for r in rules if _matches(r, sender, target, message_type)), None)
    if mode == "deny_list" and hit is not None:
        return Decision(
            False, f"collaboration policy denies {message_type} from {sender} to {target}"
        )
    if mode == "allow_list" and hit is None:
        return Decision(
            False,
            f"collaboration policy has no rule allowing {message_type} from {sender} to {target}",
        )
    approval = bool(hit and mode != "deny_list" and hit.get("approval_required"))
    return Decision(True, "allowed", approval)
