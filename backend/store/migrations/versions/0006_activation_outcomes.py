"""activation outcomes: each purchase records how its activation first ended
(succeeded | failed), after how many attempts and when, for the handbook's metrics over
a time window; a lease table (one backend process exports the gauges read from SQL)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# A purchase finished before this revision: its outcome and time are those of its
# first "activation.succeeded" / "activation.failed" timeline entry (the machine wrote
# one for every terminal answer); the attempts were not kept (NULL: unknown).
BACKFILL = """
UPDATE purchases SET activation_outcome = :outcome, activation_finished_at = first.at
FROM (SELECT purchase_id, MIN(at) AS at FROM timeline WHERE kind = :kind
      GROUP BY purchase_id) AS first
WHERE first.purchase_id = purchases.id AND purchases.activation_outcome IS NULL
"""


def upgrade() -> None:
    # plain ADD COLUMN (no table copy: other tables' foreign keys point at purchases)
    op.add_column("purchases", sa.Column("activation_outcome", sa.String(16), nullable=True))
    op.add_column("purchases", sa.Column("activation_attempts", sa.Integer(), nullable=True))
    op.add_column("purchases", sa.Column("activation_finished_at", sa.Float(), nullable=True))
    op.create_index("ix_purchases_activation_finished_at", "purchases", ["activation_finished_at"])
    for outcome in ("failed", "succeeded"):  # both never happen to one activation
        op.execute(sa.text(BACKFILL).bindparams(outcome=outcome, kind=f"activation.{outcome}"))
    leases = op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.bulk_insert(leases, [{"name": "metrics", "holder": None, "expires_at": 0.0}])


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_purchases_activation_finished_at", table_name="purchases")
    op.drop_column("purchases", "activation_finished_at")
    op.drop_column("purchases", "activation_attempts")
    op.drop_column("purchases", "activation_outcome")
