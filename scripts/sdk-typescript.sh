#!/usr/bin/env bash
# Install and build the TypeScript SDK (sdk/typescript), idempotently: `npm ci` only when
# node_modules is missing or package-lock.json changed since the last install, then `npm run build`
# (the SDK into dist/, the tests into build/test/). Needs Node >= 20 and npm.
set -euo pipefail
cd "$(dirname "$0")/../sdk/typescript"

command -v node >/dev/null || { echo "sdk-typescript: node is not installed (Node >= 20 needed)" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "sdk-typescript: Node >= 20 needed, found $(node --version)" >&2
  exit 1
fi

stamp=node_modules/.package-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
npm run --silent build
