"""idempotency keys: reserved in flight, request hash

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00

A key row is now inserted first, without an answer, by the one request that wins its primary
key (concurrent requests with the key get 409 until the answer is stored), and it records a
hash of the request so the key reused with another body is refused (422). Rows already stored
keep their answer; their hash is NULL (not compared).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch_op.alter_column("status_code", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("body", existing_type=JSON_TYPE, nullable=True)


def downgrade() -> None:
    # Rows still in flight have no answer to keep.
    op.execute("DELETE FROM idempotency_keys WHERE status_code IS NULL OR body IS NULL")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.alter_column("body", existing_type=JSON_TYPE, nullable=False)
        batch_op.alter_column("status_code", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("request_hash")
