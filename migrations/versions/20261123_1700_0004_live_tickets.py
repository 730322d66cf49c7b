"""Live tickets: short-lived, single-use passes to live streams for browsers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "live_tickets",
        sa.Column("ticket_hash", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("principal_id", sa.Uuid(), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_live_tickets_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_live_tickets_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ticket_hash", name=op.f("pk_live_tickets")),
    )
    op.create_index(op.f("ix_live_tickets_expires_at"), "live_tickets", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_live_tickets_expires_at"), table_name="live_tickets")
    op.drop_table("live_tickets")
