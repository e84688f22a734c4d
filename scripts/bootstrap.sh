#!/usr/bin/env bash
# Idempotent setup of the project's virtualenv: creates .venv and installs the server (+ dev
# tools) and the Python SDK (sdk/python, used by the CLI's client commands) into it.
# Re-running is cheap: pip is skipped when neither pyproject.toml has changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${AINTANDEM_VENV:-.venv}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "AInTandem needs Python >= 3.11 (found $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi

stamp="$VENV/.installed-$(cat pyproject.toml sdk/python/pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing dependencies into $VENV" >&2
  "$VENV/bin/pip" install -q -e '.[dev]' -e ./sdk/python
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
# The offline model (a real LLM that needs no API key); a no-op once installed.
AINTANDEM_VENV="$VENV" bash scripts/llm-deps.sh
