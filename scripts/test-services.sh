#!/usr/bin/env bash
# Idempotently brings up what the test suite talks to: PostgreSQL, the Docker engine, the
# sandbox image and docker-compose (for validating the production compose file).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "test-services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

if [ -x scripts/docker-engine.sh ] || [ -f scripts/docker-engine.sh ]; then
  bash scripts/docker-engine.sh
fi
if [ -f sandbox_image/build.sh ]; then
  bash sandbox_image/build.sh >/dev/null
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "test-services: installing docker-compose" >&2
  (apt-get install -y -q --no-install-recommends docker-compose >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends docker-compose >/dev/null; })
fi
