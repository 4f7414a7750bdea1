"""operators as people (named tokens, the audit log, who resolved a ticket); catalog
compatibility (vehicle firmware, rules per model and firmware, the catalog's version);
indexes for the paginated lists

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PAGED = ("customers", "purchases", "tickets")  # listed by (created_at, id)

services = sa.table("services", sa.column("id", sa.String), sa.column("models", sa.JSON))
tickets = sa.table(
    "tickets",
    sa.column("id", sa.String),
    sa.column("status", sa.String),
    sa.column("details", sa.JSON),
    sa.column("resolution", sa.String),
)


def upgrade() -> None:
    # plain ADD COLUMN (no table copy: other tables' foreign keys point at these)
    op.add_column("api_tokens", sa.Column("name", sa.String(64), nullable=True))
    # ops tokens issued before operators had names: named after their visible prefix
    op.execute(
        "UPDATE api_tokens SET name = 'unnamed ' || prefix WHERE role = 'ops' AND name IS NULL"
    )
    op.add_column("vehicles", sa.Column("firmware", sa.String(32), nullable=True))
    op.add_column("tickets", sa.Column("resolution", sa.String(32), nullable=True))
    op.add_column("tickets", sa.Column("resolved_by", sa.String(64), nullable=True))
    _backfill_resolutions()
    op.create_table(
        "ops_actions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ops_actions_at_id", "ops_actions", ["at", "id"])
    op.create_index("ix_ops_actions_operator", "ops_actions", ["operator"])
    state = op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(state, [{"id": 1, "version": 1, "updated_at": 0.0}])
    _rules_to_model_and_firmware()
    for table in PAGED:
        op.create_index(f"ix_{table}_created_at_id", table, ["created_at", "id"])


def _backfill_resolutions() -> None:
    bind = op.get_bind()
    resolved = bind.execute(
        sa.select(tickets.c.id, tickets.c.details).where(tickets.c.status == "RESOLVED")
    ).all()
    for ticket_id, details in resolved:
        resolution = (details or {}).get("resolution")
        if isinstance(resolution, str):
            bind.execute(
                tickets.update().where(tickets.c.id == ticket_id).values(resolution=resolution)
            )


def _rules_to_model_and_firmware() -> None:
    """``applies_to`` was a list of model names, empty meaning every model; it is now a
    list of ``{"model", "firmware"}`` rules, empty meaning no vehicle. An empty list
    becomes every model the vehicles table knows (sold to every vehicle, as before).
    What was stored came from the catalog file (seeded on every start), so it is also
    recorded as the file's: the next start replaces it with the file's new rules."""
    bind = op.get_bind()
    known = sorted(m for (m,) in bind.execute(sa.text("SELECT DISTINCT model FROM vehicles")))
    for service_id, models in bind.execute(sa.select(services.c.id, services.c.models)).all():
        names = [m for m in (models or {}).get("applies_to") or [] if isinstance(m, str)]
        rules = [{"model": m, "firmware": None} for m in sorted(set(names or known))]
        bind.execute(
            services.update()
            .where(services.c.id == service_id)
            .values(models={"applies_to": rules, "seeded": rules})
        )


def downgrade() -> None:
    bind = op.get_bind()
    for service_id, models in bind.execute(sa.select(services.c.id, services.c.models)).all():
        rules: list[dict[str, Any]] = (models or {}).get("applies_to") or []
        # lossy: firmware limits are dropped, and an empty list (sold to nobody) reads as
        # 0004's "every model"; the catalog file is seeded again on the next start anyway
        names = sorted({r["model"] for r in rules if isinstance(r, dict) and "model" in r})
        bind.execute(
            services.update()
            .where(services.c.id == service_id)
            .values(models={"applies_to": names})
        )
    for table in PAGED:
        op.drop_index(f"ix_{table}_created_at_id", table_name=table)
    op.drop_table("catalog_state")
    op.drop_index("ix_ops_actions_operator", table_name="ops_actions")
    op.drop_index("ix_ops_actions_at_id", table_name="ops_actions")
    op.drop_table("ops_actions")
    op.drop_column("tickets", "resolved_by")
    op.drop_column("tickets", "resolution")
    op.drop_column("vehicles", "firmware")
    op.drop_column("api_tokens", "name")
