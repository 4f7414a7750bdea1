"""notifications are claimed before they are sent; settlement seq widened to 64 bits

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        # 0: every row already queued is due at once
        batch_op.add_column(
            sa.Column("next_attempt_at", sa.Float(), nullable=False, server_default=sa.text("0"))
        )
        # the claim's filter (status, due time); it also serves every lookup by status
        batch_op.drop_index("ix_notifications_status")
        batch_op.create_index(
            "ix_notifications_status_next_attempt_at", ["status", "next_attempt_at"]
        )
    if op.get_bind().dialect.name == "postgresql":
        # a webhook's seq may be up to 2^53 - 1; SQLite's INTEGER holds 64 bits already
        op.alter_column(
            "payments",
            "settlement_seq",
            type_=sa.BigInteger(),
            existing_type=sa.Integer(),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "payments",
            "settlement_seq",
            type_=sa.Integer(),
            existing_type=sa.BigInteger(),
            existing_nullable=False,
        )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_status_next_attempt_at")
        batch_op.create_index("ix_notifications_status", ["status"])
        batch_op.drop_column("next_attempt_at")
