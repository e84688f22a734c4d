"""Run the benchmarks: `python -m bench [--only NAME] [--quick] [--json PATH]`.

Prints one table (benchmark, metric, ours, baseline, ratio, goal, verdict) and the machine,
and writes the results as JSON (default bench/results/latest.json). Exit status 0 when every
benchmark ran (a FAIL verdict is a result, not an error), 1 when one raised.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import traceback
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench import stats
from bench.core import REGISTRY, BenchContext, Result
from bench.machine import describe, machine_info

# One module per benchmark; importing it registers it. Add new ones here.
MODULES = [
    "bench.sandbox_lifecycle",
    "bench.message_delivery",
    "bench.ws_fanout",
    "bench.collaboration",
    "bench.api_reads",
    "bench.offline_collaboration",
]
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
HEADERS = ("benchmark", "metric", "ours", "baseline", "ratio", "goal", "verdict")


def load() -> None:
    for name in MODULES:
        importlib.import_module(name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this benchmark (repeatable, or comma-separated)",
    )
    p.add_argument("--quick", action="store_true", help="small sample sizes (a smoke run)")
    p.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"where to write the results (default {DEFAULT_JSON})",
    )
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the headline rows (no profile breakdowns) and the machine as a "
        "Markdown table, for the README",
    )
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--quiet", action="store_true", help="only the final table")
    stack = p.add_argument_group("stack")
    stack.add_argument(
        "--database-url",
        default=None,
        help="platform database (default: a migrated SQLite file in a temp dir)",
    )
    stack.add_argument(
        "--temporal-db",
        choices=("file", "memory"),
        default="file",
        help="dev server persistence: a SQLite file with WAL as `aintandem up` "
        "runs it (default), or in memory as the tests do",
    )
    stack.add_argument(
        "--health-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="sandbox health loop interval (default 10, the platform's default)",
    )
    lc = p.add_argument_group("sandbox_lifecycle")
    lc.add_argument(
        "--sandboxes",
        type=int,
        default=None,
        metavar="N",
        help="sandboxes measured (default 20, 5 with --quick)",
    )
    lc.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    lc.add_argument(
        "--poll-ms",
        type=float,
        default=25.0,
        help="GET /sandboxes/{id} poll interval (default 25 ms)",
    )
    return p


def selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(REGISTRY)
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SystemExit(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(REGISTRY)}"
        )
    return names


def _cells(r: Result) -> tuple[str, ...]:
    return (
        r.benchmark,
        r.metric,
        stats.fmt_number(r.ours),
        stats.fmt_number(r.baseline),
        stats.fmt_ratio(r.ratio),
        stats.fmt_goal(r.goal, r.higher_is_better),
        r.verdict,
    )


def render_markdown(results: list[Result], machine: str, notes: list[str]) -> str:
    """The rows a reader compares (goals and ours-vs-baseline), without the profile rows."""
    head = ("benchmark", "metric", "ours", "baseline", "ratio", "goal", "verdict")
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results:
        if r.note.startswith(("profile", "cpu")) or r.metric.startswith(" "):
            continue
        cells = [c.replace("|", "\\|") for c in _cells(r)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Machine: {machine}", ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def render(results: list[Result]) -> str:
    rows = [_cells(r) for r in results]
    return stats.render_table(
        HEADERS, rows, align_right=(False, False, True, True, True, False, False)
    )


async def run(
    args: argparse.Namespace, names: list[str]
) -> tuple[list[Result], list[str], dict[str, str]]:
    results: list[Result] = []
    errors: dict[str, str] = {}
    async with AsyncExitStack() as exit_stack:
        ctx = BenchContext(args, exit_stack)
        for name in names:
            ctx.log(f"running {name}")
            try:
                results += await REGISTRY[name].fn(ctx)
            except Exception as exc:
                traceback.print_exc()
                errors[name] = f"{type(exc).__name__}: {exc}"
                results.append(Result(name, "ERROR (see log above)", None, note=errors[name]))
    return results, ctx.notes, errors


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load()
    if args.list:
        for b in REGISTRY.values():
            print(f"{b.name:24} {b.description}")
        return 0
    names = selected(args.only)
    info = machine_info()
    results, notes, errors = asyncio.run(run(args, names))

    print()
    print(render(results))
    print()
    print(f"machine: {describe(info)}")
    for note in notes:
        print(f"note: {note}")
    payload: dict[str, Any] = {
        "machine": info,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "benchmarks": names,
        "results": [r.to_json() for r in results],
        "notes": notes,
        "errors": errors,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"results: {args.json}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render_markdown(results, describe(info), notes))
        print(f"markdown: {args.markdown}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
