"""Client commands of `aintandem`, built on the Python SDK (`aintandem` package).

`aintandem login` stores the API's base URL and the tokens in `credentials.json` (mode 0600)
under `$AINTANDEM_CONFIG_DIR` (default `~/.config/aintandem`); every other command reads it and
refreshes the tokens when they expire (writing the new ones back). `--json` prints machine
output; errors print the server's error code and message and exit with a non-zero status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import re
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli import output as out

DEFAULT_URL = "http://127.0.0.1:8000/api/v1"
EXIT_ERROR = 1
EXIT_USAGE = 2


class CLIError(Exception):
    """A problem the user can fix (not logged in, bad argument): message only, exit 1."""


# -- stored credentials --------------------------------------------------------------------------


def config_dir() -> Path:
    configured = os.environ.get("AINTANDEM_CONFIG_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aintandem"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def load_credentials() -> dict[str, Any]:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def save_credentials(data: dict[str, Any]) -> Path:
    """Write atomically, readable by the owner only (the file holds bearer tokens)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _base_url(args: argparse.Namespace, creds: dict[str, Any]) -> str:
    return (
        getattr(args, "api_url", None)
        or os.environ.get("AINTANDEM_BASE_URL")
        or creds.get("base_url")
        or DEFAULT_URL
    ).rstrip("/")


def _client(args: argparse.Namespace, *, auth: bool = True) -> Any:
    from aintandem import AInTandemClient

    creds = load_credentials()
    base_url = _base_url(args, creds)
    if not auth:
        return AInTandemClient(base_url)
    token = os.environ.get("AINTANDEM_API_KEY") or creds.get("access_token")
    if not token:
        raise CLIError("not logged in: run `aintandem login` first")
    from_env = bool(os.environ.get("AINTANDEM_API_KEY"))
    client = AInTandemClient(
        base_url,
        api_key=token,
        refresh_token=None if from_env else creds.get("refresh_token"),
    )
    if not from_env:

        def persist(access: str | None, refresh: str | None) -> None:
            save_credentials({**creds, "access_token": access, "refresh_token": refresh})

        client._core.on_tokens = persist
    return client


def _run(args: argparse.Namespace, body: Callable[[Any], Awaitable[int | None]], **kw: Any) -> int:
    async def main() -> int | None:
        async with _client(args, **kw) as client:
            return await body(client)

    return int(asyncio.run(main()) or 0)


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object as given, anything else as `{"text": ...}`."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"text": text}


# -- auth ----------------------------------------------------------------------------------------


def _password(args: argparse.Namespace, confirm: bool = False) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get("AINTANDEM_PASSWORD"):
        return os.environ["AINTANDEM_PASSWORD"]
    if not sys.stdin.isatty():
        raise CLIError("no password: use --password-stdin or AINTANDEM_PASSWORD")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Repeat password: ") != password:
        raise CLIError("the passwords differ")
    return password


def _save_login(result: Any, base_url: str) -> Path:
    """Store what a login answered (the tokens), as `login` and `register` both do."""
    return save_credentials(
        {
            "base_url": base_url,
            "email": result.user.email,
            "user_id": result.user.user_id,
            "access_token": result.access_token,
            "refresh_token": result.refresh_token,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


def cmd_register(args: argparse.Namespace) -> int:
    """Create the account, then log in with it (credentials stored as by `login`)."""
    password = _password(args, confirm=True)
    base_url = _base_url(args, load_credentials())

    async def main() -> int:
        from aintandem import AInTandemClient

        async with AInTandemClient(base_url) as client:
            user = await client.auth.register(args.email, password, args.name, args.organization)
            result = await client.auth.login(args.email, password)
        path = _save_login(result, base_url)
        if args.json:
            out.print_json({**out.to_jsonable(user), "logged_in": True, "base_url": base_url})
        else:
            print(f"registered {out.paint(user.email, 'bold')} ({user.user_id})")
            print(f"logged in at {base_url}")
            print(out.paint(f"credentials saved to {path}", "dim"))
        return 0

    return asyncio.run(main())


def cmd_login(args: argparse.Namespace) -> int:
    email = args.email or input("Email: ")
    password = _password(args)
    creds = load_credentials()
    base_url = _base_url(args, creds)

    async def body(client: Any) -> int:
        result = await client.auth.login(email, password)
        path = _save_login(result, base_url)
        if args.json:
            out.print_json(
                {"email": result.user.email, "user_id": result.user.user_id, "base_url": base_url}
            )
        else:
            print(f"logged in as {out.paint(result.user.email, 'bold')} at {base_url}")
            print(out.paint(f"credentials saved to {path}", "dim"))
        return 0

    async def main() -> int:
        from aintandem import AInTandemClient

        async with AInTandemClient(base_url) as client:
            return await body(client)

    return asyncio.run(main())


def cmd_logout(args: argparse.Namespace) -> int:
    creds = load_credentials()
    if creds.get("access_token"):
        from aintandem import AInTandemError

        async def body(client: Any) -> int:
            with contextlib.suppress(AInTandemError):
                await client.auth.logout()
            return 0

        _run(args, body)
    path = credentials_path()
    path.unlink(missing_ok=True)
    if not args.json:
        print("logged out")
    return 0


# -- status --------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    creds = load_credentials()

    async def body(client: Any) -> int:
        health = await client.system.health()
        info = await client.system.info()
        if args.json:
            out.print_json(
                {
                    "base_url": client.base_url,
                    "logged_in_as": creds.get("email"),
                    "health": health,
                    "info": info,
                }
            )
            return 0 if health.status != "unhealthy" else EXIT_ERROR
        print(f"API        {client.base_url}")
        print(f"user       {creds.get('email') or out.paint('not logged in', 'dim')}")
        print(f"server     {info.version} ({info.edition})")
        print(f"health     {out.status(health.status)}")
        for name, state in sorted(health.services.items()):
            print(f"  {name:<12} {out.status(str(state))}")
        return 0 if health.status != "unhealthy" else EXIT_ERROR

    return _run(args, body, auth=False)


# -- workspaces ----------------------------------------------------------------------------------


def cmd_workspaces_list(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        items = await client.workspaces.list(search=args.search, per_page=100)
        if args.json:
            out.print_json(items)
            return 0
        out.table(
            ["id", "name", "sandboxes", "created"],
            [(w.workspace_id, w.name, w.sandbox_count, w.created_at) for w in items],
            empty="no workspaces (create one: aintandem workspaces create NAME)",
        )
        return 0

    return _run(args, body)


def cmd_workspaces_create(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        settings: dict[str, Any] = {}
        if args.max_sandboxes is not None:
            settings["max_sandboxes"] = args.max_sandboxes
        if args.llm_provider:
            settings["default_llm_provider"] = args.llm_provider
        ws = await client.workspaces.create(
            name=args.name, description=args.description, settings=settings or None
        )
        if args.json:
            out.print_json(ws)
        else:
            print(f"created workspace {out.paint(ws.workspace_id, 'bold')} ({ws.name})")
        return 0

    return _run(args, body)


# -- sandboxes -----------------------------------------------------------------------------------


def _sandbox_rows(items: list[Any]) -> list[tuple[Any, ...]]:
    rows = []
    for sb in items:
        info = sb.info
        agent = (info.agent_config or {}).get("primary_agent", {}).get("name")
        health = info.health.status if info.health else None
        rows.append((info.sandbox_id, info.name, out.status(info.status), agent, health))
    return rows


def cmd_sandboxes_list(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        items = await client.workspaces.list_sandboxes(
            args.workspace, status=args.status, per_page=100
        )
        if args.json:
            out.print_json(items)
            return 0
        out.table(["id", "name", "status", "agent", "health"], _sandbox_rows(items))
        return 0

    return _run(args, body)


def cmd_sandboxes_create(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        agent: dict[str, Any] = {"name": args.agent or args.name, "role": args.role}
        if args.system_prompt:
            agent["system_prompt"] = args.system_prompt
        if args.capability:
            agent["capabilities"] = args.capability
        resources = {
            k: v
            for k, v in (("memory_mb", args.memory_mb), ("cpu_cores", args.cpu_cores))
            if v is not None
        }
        env = {}
        for pair in args.env or []:
            key, sep, value = pair.partition("=")
            if not sep:
                raise CLIError(f"--env wants KEY=VALUE, got {pair!r}")
            env[key] = value
        sb = await client.sandboxes.create(
            args.workspace,
            name=args.name,
            agent_config={"primary_agent": agent},
            resources=resources or None,
            environment_variables=env or None,
        )
        if args.wait:
            await sb.wait_until("running", timeout=args.timeout)
        if args.json:
            out.print_json(sb)
        else:
            print(
                f"created sandbox {out.paint(sb.id, 'bold')} ({sb.name}): {out.status(sb.status)}"
            )
        return 0

    return _run(args, body)


def _lifecycle(op: str) -> Callable[[argparse.Namespace], int]:
    target = {"start": "running", "stop": "stopped", "restart": "running"}[op]

    def command(args: argparse.Namespace) -> int:
        async def body(client: Any) -> int:
            sb = client.sandboxes.handle(args.sandbox)
            # The CLI's own --wait decides; the SDK's start() would otherwise wait by itself.
            kwargs = {"wait": False} if op == "start" else {}
            result = await getattr(sb, op)(**kwargs)
            if args.wait:
                await sb.wait_until(target, timeout=args.timeout)
                result = sb.info
            if args.json:
                out.print_json(result)
            else:
                print(f"{args.sandbox}: {out.status(result.status)}")
            return 0

        return _run(args, body)

    return command


def _log_line(timestamp: Any, level: str, message: str) -> str:
    colour = {"error": "red", "warn": "yellow", "debug": "dim"}.get(level)
    when = timestamp.strftime("%H:%M:%S") if isinstance(timestamp, datetime) else str(timestamp)
    return f"{out.paint(when, 'dim')} {out.paint(f'{level:<5}', colour)} {message}"


def cmd_sandboxes_logs(args: argparse.Namespace) -> int:
    def show(entry: Any) -> None:
        if args.json:
            print(json.dumps(out.to_jsonable(entry)), flush=True)
        else:
            print(_log_line(entry.timestamp, entry.level, entry.message), flush=True)

    async def body(client: Any) -> int:
        from aintandem import LogEntry

        sb = client.sandboxes.handle(args.sandbox)
        if not args.follow:
            for entry in (await sb.get_logs(limit=args.limit, level=args.level)).logs:
                show(entry)
            return 0
        # Subscribe before reading the history, so no line falls between the two.
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stream = sb.stream(["logs"])

        async def pump() -> None:
            try:
                async for event in stream:
                    await queue.put(event)
            except BaseException as exc:
                await queue.put(exc)
                raise

        task = asyncio.create_task(pump())
        try:
            connected = asyncio.create_task(stream.connected.wait())
            await asyncio.wait({connected, task}, timeout=10, return_when="FIRST_COMPLETED")
            connected.cancel()
            last = None
            for entry in (await sb.get_logs(limit=args.limit, level=args.level)).logs:
                last = entry.timestamp
                show(entry)
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                data = item.data if isinstance(item.data, dict) else {}
                entry = LogEntry.model_validate(
                    {
                        "timestamp": data.get("timestamp") or item.timestamp,
                        "level": data.get("level", "info"),
                        "message": data.get("message", ""),
                    }
                )
                if last is not None and entry.timestamp <= last:
                    continue
                if args.level and _LEVELS.index(entry.level) < _LEVELS.index(args.level):
                    continue
                show(entry)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await stream.aclose()

    return _run(args, body)


_LEVELS = ["debug", "info", "warn", "error"]


# -- messages ------------------------------------------------------------------------------------


SANDBOX_ID = re.compile(r"^sb_[a-z0-9]{10}$")


async def _sandboxes(client: Any, workspace_id: str) -> list[Any]:
    return [sb.info for sb in await client.workspaces.list_sandboxes(workspace_id, per_page=100)]


async def _sandbox_id(client: Any, ref: str, workspace_id: str | None) -> str:
    """A sandbox id from an id or a name: a name is looked up in `workspace_id`, or across the
    user's workspaces when none is given (where the same name in two is ambiguous)."""
    if SANDBOX_ID.match(ref):
        return ref
    if workspace_id:
        known = await _sandboxes(client, workspace_id)
        found = [sb.sandbox_id for sb in known if sb.name == ref]
        if not found:
            names = ", ".join(sorted(str(sb.name) for sb in known)) or "none"
            raise CLIError(
                f"no sandbox named {ref!r} in workspace {workspace_id} (its sandboxes: {names})"
            )
        return str(found[0])  # names are unique within a workspace
    matches = []
    async for ws in client.workspaces.list(per_page=100):
        for sb in await _sandboxes(client, ws.workspace_id):
            if sb.name == ref:
                matches.append((ws.workspace_id, sb.sandbox_id))
    if not matches:
        raise CLIError(f"no sandbox named {ref!r} in your workspaces (give its id, sb_...)")
    if len(matches) > 1:
        where = ", ".join(f"{sid} in {wid}" for wid, sid in matches)
        raise CLIError(
            f"sandbox name {ref!r} is ambiguous: {where}; pass -w WORKSPACE or the sandbox id"
        )
    return str(matches[0][1])


def cmd_send(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        # TO may be a name too: the server resolves it within the sender's workspace.
        sender = await _sandbox_id(client, args.from_sandbox, args.workspace)
        sb = client.sandboxes.handle(sender)
        accepted = await sb.send_message(
            to=args.to,
            content=_json_object(args.content),
            message_type=args.type,
            to_agent=args.to_agent,
            priority=args.priority,
            requires_response=args.requires_response or None,
        )
        result: Any = accepted
        if args.wait:
            result = await client.messages.wait_until(
                accepted.message_id,
                ("delivered", "responded", "failed", "timeout")
                if not args.requires_response
                else ("responded", "failed", "timeout"),
                timeout=args.timeout,
            )
        if args.json:
            out.print_json(result)
        else:
            print(f"message {out.paint(result.message_id, 'bold')}: {out.status(result.status)}")
            response = getattr(result, "response", None)
            if response:
                print(json.dumps(response.get("content", response), indent=2))
        return EXIT_ERROR if getattr(result, "status", "") in ("failed", "timeout") else 0

    return _run(args, body)


# -- collaborations ------------------------------------------------------------------------------


def cmd_collab_run(args: argparse.Namespace) -> int:
    started: list[str] = []  # the id, once the server has accepted the collaboration

    async def body(client: Any) -> int:
        collab = await client.collaborations.orchestrate(
            args.workspace,
            args.task,
            args.participant,
            collaboration_mode=args.mode,
            orchestrator=args.orchestrator,
            timeout=args.timeout,
            deliverables=args.deliverable or None,
        )
        started.append(collab.id)
        if not args.json:
            print(f"collaboration {out.paint(collab.id, 'bold')} started ({args.mode})")
        if args.no_wait:
            if args.json:
                out.print_json(collab.started or collab.info)
            return 0
        return await _follow(collab, args)

    try:
        return _run(args, body)
    except KeyboardInterrupt:
        if not started:
            raise
        _still_running(started[0])
        return 130


def _still_running(collaboration_id: str) -> None:
    """Ctrl-C stops the watching, not the collaboration: say so, and how to pick it up."""
    err = sys.stderr
    print(file=err)
    print(
        f"interrupted: collaboration {out.paint(collaboration_id, 'bold', err)} keeps running "
        "on the server.",
        file=err,
    )
    print(f"  follow it:  aintandem collab watch {collaboration_id}", file=err)
    print(f"  its state:  aintandem collab status {collaboration_id}", file=err)
    print(f"  stop it:    aintandem collab cancel {collaboration_id}", file=err)


def cmd_collab_watch(args: argparse.Namespace) -> int:
    """Follow an existing collaboration with `collab run`'s progress display."""

    async def body(client: Any) -> int:
        return await _follow(client.collaborations.handle(args.collaboration), args)

    return _run(args, body)


async def _follow(collab: Any, args: argparse.Namespace) -> int:
    """Print the progress until the end (pushed over the collaboration's WebSocket stream,
    polling with back-off only while that cannot be had), then the outcome."""
    tty = sys.stdout.isatty() and not args.json
    final = None
    try:
        async for snap in collab.watch(poll_interval=args.poll_interval):
            final = snap
            if args.json:
                continue
            line = _progress_line(snap)
            if tty:
                sys.stdout.write("\r\x1b[2K" + line)
                sys.stdout.flush()
            else:
                print(line, flush=True)
    finally:
        if tty:
            print()
    assert final is not None
    if args.json:
        out.print_json(final)
    else:
        _print_outcome(final)
    return 0 if final.status == "completed" else EXIT_ERROR


def _progress_line(snap: Any) -> str:
    """`[#####-----]  42% in_progress step 2/5 api`: a whole percentage, every step counted
    once (completed, remaining or in progress), `-` once nothing is in progress."""
    progress = snap.progress
    pct = max(0, min(100, int(progress.percentage))) if progress else 0
    names = set(progress.completed_steps) | set(progress.remaining_steps) if progress else set()
    if progress and progress.current_step:
        names.add(progress.current_step)
    done, total = (len(progress.completed_steps) if progress else 0), len(names)
    step = progress.current_step if progress and progress.current_step else "-"
    steps = f"step {done}/{total} " if total else ""
    filled = round(30 * pct / 100)
    bar = "[" + "#" * filled + "-" * (30 - filled) + f"] {pct:3d}%"
    return f"{bar} {out.status(snap.status)} {steps}{step}"


def _print_outcome(final: Any) -> None:
    print(f"status: {out.status(final.status)}")
    if final.error:
        print(f"{out.paint('error', 'red')}: {final.error.code}: {final.error.message}")
    result = final.result if isinstance(final.result, dict) else {}
    if result.get("plan_source"):
        print(f"plan: {result['plan_source']}")
    for warning in result.get("warnings") or []:  # completed is not always done well
        print(f"{out.paint('warning', 'yellow')}: {warning}")
    for name, text in (final.deliverables or {}).items():
        print()
        print(out.paint(f"== {name} ==", "bold"))
        print(text if isinstance(text, str) else json.dumps(text, indent=2))
    if final.result and not final.deliverables:
        print()
        print(final.result if isinstance(final.result, str) else json.dumps(final.result, indent=2))


# -- operators: messages -------------------------------------------------------------------------

RETRYABLE = ("failed", "timeout")


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value or "-")


def cmd_messages_list(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        known = {sb.sandbox_id: sb.name for sb in await _sandboxes(client, args.workspace)}
        sandbox = None
        if args.sandbox:
            sandbox = await _sandbox_id(client, args.sandbox, args.workspace)
        items = await client.messages.list(
            args.workspace,
            status=args.status,
            sandbox_id=sandbox,
            since=args.since,
            limit=args.limit,
        )
        if args.json:
            out.print_json(items)
            return 0
        out.table(
            ["id", "time", "from", "to", "type", "status", "tries", "reason"],
            [
                (
                    m.message_id,
                    _when(m.timestamp),
                    known.get(m.from_sandbox or "", m.from_sandbox),
                    known.get(m.to_sandbox or "", m.to_sandbox),
                    m.message_type,
                    out.status(m.status),
                    m.attempts,
                    (m.status_reason or "")[:60] or None,
                )
                for m in items
            ],
            empty="no messages match",
        )
        if any(m.status in RETRYABLE for m in items):
            print(out.paint("retry one: aintandem messages retry MESSAGE_ID", "dim"))
        return 0

    return _run(args, body)


def cmd_messages_show(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        m = await client.messages.get(args.message)
        if args.json:
            out.print_json(m)
            return 0
        reason = f" ({m.status_reason})" if m.status_reason else ""
        rows = [
            ("message", m.message_id),
            ("status", f"{out.status(m.status)}{reason}, attempt {m.attempts or 1}"),
            ("from", f"{m.from_sandbox or '-'} ({m.from_agent or '-'})"),
            ("to", f"{m.to_sandbox or '-'} ({m.to_agent or '-'})"),
            ("type", f"{m.message_type}, priority {m.priority}"),
            ("sent", _when(m.timestamp)),
            ("delivered", _when(m.delivered_at)),
            ("responded", _when(m.responded_at)),
        ]
        for key, value in rows:
            print(f"{key:<10} {value}")
        print("content:")
        print(json.dumps(m.content, indent=2))
        if m.response:
            print("response:")
            print(json.dumps(m.response.get("content", m.response), indent=2))
        if m.status in RETRYABLE:
            print(out.paint(f"retry it: aintandem messages retry {m.message_id}", "dim"))
        return 0

    return _run(args, body)


def cmd_messages_retry(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        result: Any = await client.messages.retry(args.message)
        if args.wait:
            result = await client.messages.wait_until(
                args.message, ("delivered", "responded", *RETRYABLE), timeout=args.timeout
            )
        if args.json:
            out.print_json(result)
        else:
            attempts = getattr(result, "attempts", None)
            tries = f" (attempt {attempts})" if attempts else ""
            print(f"message {out.paint(args.message, 'bold')}: {out.status(result.status)}{tries}")
        return EXIT_ERROR if result.status in RETRYABLE else 0

    return _run(args, body)


# -- operators: collaborations -------------------------------------------------------------------


def _notes(c: Any) -> str | None:
    """What a list row should warn about: the error, a fallback plan, warnings."""
    parts = []
    if c.error and c.error.code:
        parts.append(str(c.error.code))
    if c.plan_source and c.plan_source != "model":
        parts.append(f"plan: {c.plan_source}")
    if c.warnings:
        parts.append(f"{len(c.warnings)} warning(s)")
    return ", ".join(parts) or None


def cmd_collab_list(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        items = await client.collaborations.list(
            args.workspace, status=args.status, search=args.search, per_page=100, limit=args.limit
        )
        if args.json:
            out.print_json(items)
            return 0
        out.table(
            ["id", "status", "mode", "done", "created", "task", "notes"],
            [
                (
                    c.collaboration_id,
                    out.status(c.status),
                    c.collaboration_mode,
                    f"{c.percentage}%",
                    _when(c.created_at),
                    (c.task or "")[:48],
                    _notes(c),
                )
                for c in items
            ],
            empty="no collaborations",
        )
        return 0

    return _run(args, body)


def cmd_collab_status(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        info = (await client.collaborations.get(args.collaboration)).info
        code = EXIT_ERROR if info.status == "failed" else 0
        if args.json:
            out.print_json(info)
            return code
        cid = info.collaboration_id
        print(f"collaboration {out.paint(cid, 'bold')} ({info.collaboration_mode})")
        print(f"task      {info.task}")
        print(f"progress  {_progress_line(info)}")
        print(f"started   {_when(info.started_at)}")
        if info.done:
            print(f"ended     {_when(info.completed_at)}")
        else:
            print(f"estimate  {_when(info.estimated_completion)}")
        steps = [s for s in getattr(info, "steps", None) or [] if isinstance(s, dict)]
        if steps:
            out.table(
                ["step", "agent", "status", "tries"],
                [
                    (s.get("step"), s.get("agent"), out.status(s.get("status")), s.get("attempts"))
                    for s in steps
                ],
            )
        if info.done:
            _print_outcome(info)
        else:
            print(out.paint(f"follow it: aintandem collab watch {cid}", "dim"))
        return code

    return _run(args, body)


def cmd_collab_cancel(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        result = await client.collaborations.cancel(args.collaboration)
        cid = out.paint(args.collaboration, "bold")
        if args.json:
            out.print_json(result)
        elif result.status == "cancelled":
            print(f"collaboration {cid}: {out.status('cancelled')}")
        else:
            print(
                f"collaboration {cid}: cancel requested, still {out.status(result.status)} "
                f"while its steps stop (aintandem collab status {args.collaboration})"
            )
        return 0

    return _run(args, body)


# -- parser --------------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    common.add_argument(
        "--api-url",
        metavar="URL",
        help="API base URL (default: the one you logged in to, $AINTANDEM_BASE_URL, "
        f"{DEFAULT_URL})",
    )
    return common


def _wait_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"wait until {what}")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (120)")


def register(sub: Any) -> None:
    """Add the client commands to the `aintandem` parser's subcommands."""
    common = _common()

    def password_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from stdin (else $AINTANDEM_PASSWORD or a prompt)",
        )

    p = sub.add_parser("register", parents=[common], help="create an account")
    p.add_argument("--email", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--organization")
    password_flag(p)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("login", parents=[common], help="log in and store the token")
    p.add_argument("--email")
    password_flag(p)
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", parents=[common], help="revoke the session, forget the token")
    p.set_defaults(func=cmd_logout)

    p = sub.add_parser("status", parents=[common], help="API health, version and who you are")
    p.set_defaults(func=cmd_status)

    ws = sub.add_parser("workspaces", help="list or create workspaces").add_subparsers(
        dest="workspaces_cmd", required=True
    )
    p = ws.add_parser("list", parents=[common], help="your workspaces")
    p.add_argument("--search")
    p.set_defaults(func=cmd_workspaces_list)
    p = ws.add_parser("create", parents=[common], help="create a workspace")
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--max-sandboxes", type=int)
    p.add_argument("--llm-provider", choices=["qwen", "glm", "claude", "openai"])
    p.set_defaults(func=cmd_workspaces_create)

    sb = sub.add_parser("sandboxes", help="manage agent sandboxes").add_subparsers(
        dest="sandboxes_cmd", required=True
    )
    p = sb.add_parser("list", parents=[common], help="a workspace's sandboxes")
    p.add_argument("-w", "--workspace", required=True, help="workspace id")
    p.add_argument("--status", choices=["running", "stopped", "error"])
    p.set_defaults(func=cmd_sandboxes_list)
    p = sb.add_parser("create", parents=[common], help="create a sandbox (it starts by itself)")
    p.add_argument("name")
    p.add_argument("-w", "--workspace", required=True, help="workspace id")
    p.add_argument("--agent", help="primary agent's name (default: the sandbox name)")
    p.add_argument("--role", default="Assistant", help="primary agent's role")
    p.add_argument("--system-prompt")
    p.add_argument("--capability", action="append", help="repeatable")
    p.add_argument("--memory-mb", type=int)
    p.add_argument("--cpu-cores", type=float)
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="repeatable")
    _wait_flags(p, "it runs")
    p.set_defaults(func=cmd_sandboxes_create)
    for op in ("start", "stop", "restart"):
        p = sb.add_parser(op, parents=[common], help=f"{op} a sandbox")
        p.add_argument("sandbox", help="sandbox id")
        _wait_flags(p, "it is " + ("stopped" if op == "stop" else "running"))
        p.set_defaults(func=_lifecycle(op))
    p = sb.add_parser("logs", parents=[common], help="a sandbox's logs (-f to follow)")
    p.add_argument("sandbox", help="sandbox id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--limit", type=int, default=100)
    p.add_argument("--level", choices=["debug", "info", "warn", "error"])
    p.set_defaults(func=cmd_sandboxes_logs)

    p = sub.add_parser("send", parents=[common], help="send a message between sandboxes")
    p.add_argument("from_sandbox", metavar="FROM", help="sending sandbox id or name")
    p.add_argument("to", metavar="TO", help="target sandbox id or name (in FROM's workspace)")
    p.add_argument(
        "-w", "--workspace", help="workspace id where FROM's name is looked up (default: all)"
    )
    p.add_argument("content", help='a JSON object, or text (sent as {"text": ...})')
    p.add_argument("--type", default="request", choices=["request", "notification", "command"])
    p.add_argument("--to-agent")
    p.add_argument("--priority", type=int)
    p.add_argument("--requires-response", action="store_true", help="the target agent answers")
    _wait_flags(p, "delivered (or answered with --requires-response)")
    p.set_defaults(func=cmd_send)

    collab = sub.add_parser("collab", help="multi-agent collaborations").add_subparsers(
        dest="collab_cmd", required=True
    )
    p = collab.add_parser(
        "run", parents=[common], help="orchestrate a task and follow it to the end"
    )
    p.add_argument("-w", "--workspace", required=True, help="workspace id")
    p.add_argument("--task", required=True)
    p.add_argument(
        "-p", "--participant", action="append", required=True, help="sandbox name or id (≥ 2)"
    )
    p.add_argument(
        "--mode", default="orchestrated", choices=["orchestrated", "peer_to_peer", "swarm"]
    )
    p.add_argument("--orchestrator", help="agent name")
    p.add_argument("--deliverable", action="append", help="repeatable")
    p.add_argument("--timeout", type=int, default=300, help="seconds (30-3600)")
    p.add_argument("--poll-interval", type=float, default=2.0)
    p.add_argument("--no-wait", action="store_true", help="print the id and return")
    p.set_defaults(func=cmd_collab_run)
    p = collab.add_parser(
        "watch", parents=[common], help="follow a collaboration's progress to the end"
    )
    p.add_argument("collaboration", help="collaboration id")
    p.add_argument("--poll-interval", type=float, default=2.0, help="fallback polling (s)")
    p.set_defaults(func=cmd_collab_watch)
    collab_statuses = ["initializing", "in_progress", "completed", "failed", "cancelled"]
    p = collab.add_parser("list", parents=[common], help="a workspace's collaborations")
    p.add_argument("-w", "--workspace", required=True, help="workspace id")
    p.add_argument("--status", action="append", choices=collab_statuses, help="repeatable")
    p.add_argument("--search", help="text in the task")
    p.add_argument("-n", "--limit", type=int, default=50, help="at most this many (50)")
    p.set_defaults(func=cmd_collab_list)
    p = collab.add_parser("status", parents=[common], help="a collaboration's state and result")
    p.add_argument("collaboration", help="collaboration id")
    p.set_defaults(func=cmd_collab_status)
    p = collab.add_parser("cancel", parents=[common], help="stop a collaboration")
    p.add_argument("collaboration", help="collaboration id")
    p.set_defaults(func=cmd_collab_cancel)

    msgs = sub.add_parser("messages", help="inspect and retry message deliveries").add_subparsers(
        dest="messages_cmd", required=True
    )
    p = msgs.add_parser("list", parents=[common], help="a workspace's messages, newest first")
    p.add_argument("-w", "--workspace", required=True, help="workspace id")
    p.add_argument(
        "--status",
        action="append",
        choices=["queued", "pending_approval", "delivered", "responded", "failed", "timeout"],
        help="repeatable (--status failed --status timeout: what can be retried)",
    )
    p.add_argument("--sandbox", help="sandbox name or id: messages it sent or received")
    p.add_argument("--since", help="ISO 8601 time, e.g. 2025-01-10T15:00:00Z")
    p.add_argument("-n", "--limit", type=int, default=50, help="newest this many (1-1000, 50)")
    p.set_defaults(func=cmd_messages_list)
    p = msgs.add_parser("show", parents=[common], help="one message, with its response")
    p.add_argument("message", help="message id")
    p.set_defaults(func=cmd_messages_show)
    p = msgs.add_parser("retry", parents=[common], help="re-enqueue a failed delivery")
    p.add_argument("message", help="message id")
    _wait_flags(p, "delivered (or failed again)")
    p.set_defaults(func=cmd_messages_retry)


CLIENT_COMMANDS = {"register", "login", "logout", "status", "workspaces", "sandboxes", "send"}
CLIENT_COMMANDS |= {"collab", "messages"}


def run_client_command(args: argparse.Namespace) -> int:
    """Run one client command; every failure becomes a message and a non-zero exit code."""
    try:
        from aintandem import AInTandemError
    except ImportError:
        out.error("the Python SDK is not installed: pip install -e sdk/python")
        return EXIT_ERROR
    try:
        return int(args.func(args) or 0)
    except AInTandemError as exc:
        _report(args, exc)
        return EXIT_ERROR
    except CLIError as exc:
        if getattr(args, "json", False):
            print(
                json.dumps({"error": {"code": "CLI_ERROR", "message": str(exc)}}), file=sys.stderr
            )
        else:
            out.error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `aintandem ... | head`: the reader left; not an error worth a message.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("AINTANDEM_DEBUG"):
            raise
        out.error(f"{type(exc).__name__}: {exc} (set AINTANDEM_DEBUG=1 for the traceback)")
        return EXIT_ERROR


def _report(args: argparse.Namespace, exc: Any) -> None:
    if getattr(args, "json", False):
        body = {
            "error": {
                "code": exc.code,
                "message": exc.message,
                "status": exc.status,
                "details": exc.details,
                "request_id": exc.request_id,
            }
        }
        print(json.dumps(body), file=sys.stderr)
        return
    out.error(f"{exc.code}: {exc.message}")
    fields = exc.details.get("fields") if isinstance(exc.details, dict) else None
    for problem in fields or []:
        if isinstance(problem, dict):
            print(f"  {problem.get('field')}: {problem.get('message')}", file=sys.stderr)
    if exc.code == "AUTHENTICATION_FAILED":
        print("  (run `aintandem login`)", file=sys.stderr)
    if exc.request_id:
        print(out.paint(f"  request id: {exc.request_id}", "dim", sys.stderr), file=sys.stderr)
