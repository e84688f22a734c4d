#!/usr/bin/env bash
# Creates the application's role and database. The postgres image runs this once, on an empty
# data directory; Temporal's auto-setup creates its own `temporal` and `temporal_visibility`.
# Changing AINTANDEM_DB_PASSWORD later needs `ALTER ROLE aintandem PASSWORD ...` by hand.
set -euo pipefail

: "${AINTANDEM_DB_PASSWORD:?AINTANDEM_DB_PASSWORD must be set}"

# The password goes in as a psql variable (:'app_password' quotes it), never spliced into SQL.
psql -v ON_ERROR_STOP=1 -v app_password="$AINTANDEM_DB_PASSWORD" \
  --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE aintandem LOGIN PASSWORD :'app_password';
CREATE DATABASE aintandem OWNER aintandem;
REVOKE ALL ON DATABASE aintandem FROM PUBLIC;
SQL
