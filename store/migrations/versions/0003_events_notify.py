"""events: NOTIFY aintandem_events on insert (PostgreSQL), so every API replica wakes at once

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 19:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# One notification per statement (not per row) keeps a burst of inserts cheap; the payload is
# the highest new id, listeners read everything after the last id they dispatched anyway.
UPGRADE = """
CREATE OR REPLACE FUNCTION aintandem_notify_events() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('aintandem_events', COALESCE((SELECT max(id) FROM new_rows), 0)::text);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_notify AFTER INSERT ON events
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION aintandem_notify_events();
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(UPGRADE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
        op.execute("DROP FUNCTION IF EXISTS aintandem_notify_events()")
