"""service lifecycle (issue 5): expiry, subscriptions, scheduler, withdrawal, support

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PURCHASE_COLUMNS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("expires_at", sa.Float()),
    ("billable_from", sa.Float()),
    ("ends_at", sa.Float()),
    ("cancel_reason", sa.String(length=32)),
    ("cancelled_at", sa.Float()),
    ("deactivation_id", sa.String(length=36)),
    ("deactivation_state", sa.String(length=16)),
    ("support_activation_id", sa.String(length=36)),
]


def upgrade() -> None:
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        for name, type_ in PURCHASE_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.create_unique_constraint("uq_purchases_deactivation_id", ["deactivation_id"])
        batch_op.create_unique_constraint(
            "uq_purchases_support_activation_id", ["support_activation_id"]
        )
    with op.batch_alter_table("vehicles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stolen_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("warranty_notified_at", sa.Float(), nullable=True))
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "exclude_after_cancel", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    op.create_table(
        "scheduled_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("purchase_id", sa.String(length=36), nullable=True),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["purchase_id"], ["purchases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_scheduled_jobs_due_at", "scheduled_jobs", ["due_at"])
    op.create_index("ix_scheduled_jobs_state", "scheduled_jobs", ["state"])
    op.create_table(
        "subscription_charges",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("purchase_id", sa.String(length=36), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("days_billed", sa.Integer(), nullable=False),
        sa.Column("days_in_month", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("authorization_ref", sa.String(length=64), nullable=True),
        sa.Column("provider_ref", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("completed_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["purchase_id"], ["purchases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("purchase_id", "month"),
    )
    op.create_index("ix_subscription_charges_purchase_id", "subscription_charges", ["purchase_id"])
    op.create_index("ix_subscription_charges_state", "subscription_charges", ["state"])


def downgrade() -> None:
    op.drop_table("subscription_charges")
    op.drop_table("scheduled_jobs")
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.drop_column("exclude_after_cancel")
    with op.batch_alter_table("vehicles", schema=None) as batch_op:
        batch_op.drop_column("warranty_notified_at")
        batch_op.drop_column("stolen_at")
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.drop_constraint("uq_purchases_support_activation_id", type_="unique")
        batch_op.drop_constraint("uq_purchases_deactivation_id", type_="unique")
        for name, _ in reversed(PURCHASE_COLUMNS):
            batch_op.drop_column(name)
