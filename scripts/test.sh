#!/usr/bin/env bash
# The test command (`make test`, and what .ci/run calls): services up, then the whole suite on
# SQLite and PostgreSQL with the real Temporal dev server and Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/test-services.sh
# pytest exits 5 when it collected no tests: that is a failure here, never a silent pass.
exec .venv/bin/python -m pytest -q "$@"
