"""Terminal output of the client commands: tables, colours (on a TTY only), JSON, errors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

COLOURS = {
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "dim": "2",
    "bold": "1",
}
STATUS_COLOURS = {
    "running": "green",
    "healthy": "green",
    "delivered": "green",
    "responded": "green",
    "completed": "green",
    "available": "green",
    "provisioning": "yellow",
    "starting": "yellow",
    "restarting": "yellow",
    "stopping": "yellow",
    "queued": "yellow",
    "in_progress": "yellow",
    "initializing": "yellow",
    "pending_approval": "yellow",
    "degraded": "yellow",
    "busy": "yellow",
    "stopped": "dim",
    "cancelled": "dim",
    "offline": "dim",
    "unknown": "dim",
    "error": "red",
    "failed": "red",
    "timeout": "red",
    "unhealthy": "red",
}


def use_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, colour: str | None, stream: TextIO | None = None) -> str:
    if not colour or not use_colour(stream or sys.stdout):
        return text
    return f"\x1b[{COLOURS[colour]}m{text}\x1b[0m"


def status(text: str | None) -> str:
    value = text or "-"
    return paint(value, STATUS_COLOURS.get(value))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _visible_len(text: str) -> int:
    # ANSI colour sequences take no room on screen.
    out, skip = 0, False
    for ch in text:
        if ch == "\x1b":
            skip = True
        elif skip and ch == "m":
            skip = False
        elif not skip:
            out += 1
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> None:
    if not rows:
        print(paint(empty, "dim"))
        return
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [
        max(_visible_len(h), *(_visible_len(r[i]) for r in cells)) for i, h in enumerate(headers)
    ]
    print(
        "  ".join(paint(h.upper().ljust(widths[i]), "bold") for i, h in enumerate(headers)).rstrip()
    )
    for row in cells:
        line = "  ".join(c + " " * (widths[i] - _visible_len(c)) for i, c in enumerate(row))
        print(line.rstrip())


def to_jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if hasattr(value, "info") and hasattr(value.info, "model_dump"):
        return value.info.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def print_json(value: Any) -> None:
    print(json.dumps(to_jsonable(value), indent=2, sort_keys=False))
    sys.stdout.flush()


def error(message: str) -> None:
    print(f"{paint('error:', 'red', sys.stderr)} {message}", file=sys.stderr)


def progress_bar(percentage: float, width: int = 30) -> str:
    pct = max(0.0, min(100.0, float(percentage)))
    filled = round(width * pct / 100)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {pct:5.1f}%"
