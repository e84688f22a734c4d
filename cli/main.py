"""Entry point of the `aintandem` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any


def get_settings() -> Any:
    # Imported on use: the client commands (login, workspaces, ...) never load the server's
    # settings, which keeps them quick to start.
    from config.settings import get_settings as settings

    return settings()


def _cmd_api(_: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        ws_ping_interval=20,
        ws_ping_timeout=20,
        **proxy_options(settings),
    )
    return 0


def proxy_options(settings: Any) -> dict[str, Any]:
    """uvicorn's proxy-header options from `AINTANDEM_FORWARDED_ALLOW_IPS`.

    X-Forwarded-For/-Proto are believed only from the listed peers (a reverse proxy's address).
    Empty (the default) turns proxy headers off: uvicorn's own default trusts 127.0.0.1, so any
    local process, or a client of a proxy that passes the header through, could pick its own
    address and get a fresh per-IP auth rate-limit bucket with every request.
    """
    allowed = list(settings.forwarded_allow_ips)
    return {"proxy_headers": bool(allowed), "forwarded_allow_ips": allowed}


def _cmd_worker(_: argparse.Namespace) -> int:
    from worker.main import run

    asyncio.run(run(get_settings()))
    return 0


def _cmd_migrate(_: argparse.Namespace) -> int:
    from store.migrate import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    print(f"database migrated: {_redact(settings.resolved_database_url)}")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from cli.up import run_up

    return run_up(get_settings(), with_docker=not args.no_docker)


def _cmd_image_build(_: argparse.Namespace) -> int:
    from cli.up import ensure_docker

    ensure_docker()
    return 0


def _cmd_offline_model(args: argparse.Namespace) -> int:
    import json

    from cli import offline_model as models
    from domain.offline_models import offline_model

    if args.model_cmd == "list":
        print(json.dumps(models.describe(), indent=2))
        return 0
    names = args.names or [get_settings().offline_model]
    try:
        for name in names:
            models.install(offline_model(name))
    except (KeyError, models.InstallError) as exc:
        print(f"offline-model: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aintandem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Temporal, migrations, worker and API; Ctrl-C stops all")
    up.add_argument(
        "--no-docker",
        action="store_true",
        help="do not install/start the Docker engine or build the sandbox image",
    )
    up.set_defaults(func=_cmd_up)
    sub.add_parser("api", help="run the API server alone").set_defaults(func=_cmd_api)
    sub.add_parser("worker", help="run a Temporal worker alone").set_defaults(func=_cmd_worker)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_cmd_migrate)
    image = sub.add_parser("image", help="the sandbox image").add_subparsers(
        dest="image_cmd", required=True
    )
    image.add_parser(
        "build",
        help="install/start the Docker engine if needed and build the "
        "sandbox image locally (idempotent)",
    ).set_defaults(func=_cmd_image_build)
    models = sub.add_parser(
        "offline-model", help="the embedded models (no API key needed)"
    ).add_subparsers(dest="model_cmd", required=True)
    install = models.add_parser(
        "install",
        help="download, verify and install embedded models (default: AINTANDEM_OFFLINE_MODEL)",
    )
    install.add_argument("names", nargs="*", help="e.g. qwen-0.5b, qwen-1.5b, smollm2")
    install.set_defaults(func=_cmd_offline_model)
    models.add_parser("list", help="the known models and which are installed").set_defaults(
        func=_cmd_offline_model
    )
    from cli.client import register

    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cli.client import CLIENT_COMMANDS, run_client_command

    if args.command in CLIENT_COMMANDS:
        return run_client_command(args)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
