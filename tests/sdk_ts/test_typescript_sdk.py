"""The TypeScript SDK (sdk/typescript) against a real `aintandem up` stack.

Builds the SDK and its tests (scripts/sdk-typescript.sh: `npm ci` when needed, `tsc`), starts a
stack on free ports, and runs the SDK's `node --test` suite with `AINTANDEM_BASE_URL` pointing at
it. node's TAP output is shown when the suite fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_stack import Stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "typescript"

# Every SDK test registers its own user and makes many calls; the spec's per-hour limits would
# throttle the suite (the 429 handling itself is covered by a unit test with a fake fetch).
STACK_ENV = {
    "AINTANDEM_RATE_LIMIT_AUTH_PER_MINUTE": "100000",
    "AINTANDEM_RATE_LIMIT_WORKSPACE_PER_HOUR": "100000",
    "AINTANDEM_RATE_LIMIT_SANDBOX_PER_HOUR": "100000",
    "AINTANDEM_RATE_LIMIT_MESSAGE_PER_HOUR": "100000",
    "AINTANDEM_MAX_WORKSPACES": "100",
    # The TS suite's workspaces ask for max_sandboxes 10 and 20 (above it: refused, 422).
    "AINTANDEM_MAX_SANDBOXES_PER_WORKSPACE": "20",
    # Logs and metrics samples show up within seconds instead of the default 10 s.
    "AINTANDEM_SANDBOX_HEALTH_INTERVAL_SECONDS": "2",
}


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def built_sdk() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required for the TypeScript SDK tests (Node >= 20)")
    result = _run([str(ROOT / "scripts" / "sdk-typescript.sh")], cwd=ROOT, timeout=600)
    assert result.returncode == 0, f"build failed:\n{result.stdout}\n{result.stderr}"
    assert (SDK / "dist" / "index.js").exists()
    assert (SDK / "dist" / "index.d.ts").exists()
    return SDK


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("sdk-ts") / "data", **STACK_ENV)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        s.remove_sandboxes()  # what a test's own cleanup missed


def test_typescript_sdk_against_the_live_stack(built_sdk: Path, stack: Stack) -> None:
    tests = sorted(
        str(p.relative_to(built_sdk)) for p in (built_sdk / "build" / "test").glob("*.test.js")
    )
    assert tests, "no compiled tests in sdk/typescript/build/test"
    env = {**os.environ, "AINTANDEM_BASE_URL": stack.api_url, "NO_COLOR": "1"}
    result = _run(
        ["node", "--test", "--test-reporter=tap", "--test-concurrency=2", *tests],
        cwd=built_sdk,
        env=env,
        timeout=1500,
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith("# ")]
    skipped = [
        ln.strip()
        for ln in result.stdout.splitlines()
        if "not ok" in ln or "# SKIP" in ln or "# TODO" in ln
    ]
    print("\n".join(["node --test:", *summary, *skipped]))  # shown with -rP / on failure
    assert result.returncode == 0, (
        f"node --test failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n"
        f"stack log: {stack.log}"
    )
    # A suite that silently skipped everything (no base URL, say) is not a pass.
    counts = dict(line[2:].split(" ", 1) for line in summary if " " in line[2:])
    assert int(counts.get("pass", "0")) >= 20, result.stdout
    assert int(counts.get("fail", "1")) == 0, result.stdout
