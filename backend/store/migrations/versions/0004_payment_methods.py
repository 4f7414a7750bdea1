"""payment methods: a customer pays by card (hold, then capture) or direct debit
(charged at once, refunded if the activation fails); each payment records its method

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no table copy: other tables' foreign keys point at these two)
    card = sa.text("'card'")  # every customer and payment so far paid by card
    op.add_column(
        "customers", sa.Column("payment_method", sa.String(16), nullable=False, server_default=card)
    )
    op.add_column(
        "payments", sa.Column("method", sa.String(16), nullable=False, server_default=card)
    )


def downgrade() -> None:
    op.drop_column("payments", "method")
    op.drop_column("customers", "payment_method")
