"""Tenants, agents, API keys; sessions as support cases; message kinds and visibility.

Existing sessions join the default tenant, open, normal priority, their last activity
being their last update.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 14:00:00
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_TENANT_ID = uuid.UUID(int=0)


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("slug", name=op.f("uq_tenants_slug")),
    )
    op.bulk_insert(
        tenants,
        [
            {
                "id": DEFAULT_TENANT_ID,
                "slug": "default",
                "name": "Default tenant",
                "created_at": datetime.now(UTC),
            }
        ],
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("role", _enum("agent_role", "agent", "admin"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("external_subject", sa.String(255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_agents_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint(
            "tenant_id", "external_subject", name=op.f("uq_agents_tenant_id_external_subject")
        ),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_api_keys_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_api_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_agent_id"), "api_keys", ["agent_id"])
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"])

    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(sa.Column("tenant_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("customer_token_hash", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column(
                "status",
                _enum("session_status", "open", "pending", "assigned", "resolved", "closed"),
                nullable=False,
                server_default="open",
            )
        )
        batch.add_column(sa.Column("assignee_id", sa.Uuid(), nullable=True))
        batch.add_column(
            sa.Column(
                "priority",
                _enum("priority", "low", "normal", "high", "urgent"),
                nullable=False,
                server_default="normal",
            )
        )
        batch.add_column(sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=True))
    sessions = sa.table(
        "chat_sessions",
        sa.column("tenant_id", sa.Uuid()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
        sa.column("last_activity_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        sessions.update().values(
            tenant_id=sa.literal(DEFAULT_TENANT_ID, sa.Uuid()),
            last_activity_at=sessions.c.updated_at,
        )
    )
    with op.batch_alter_table("chat_sessions") as batch:
        batch.alter_column("tenant_id", existing_type=sa.Uuid(), nullable=False)
        batch.alter_column(
            "last_activity_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch.alter_column("status", server_default=None, existing_nullable=False)
        batch.alter_column("priority", server_default=None, existing_nullable=False)
        batch.create_foreign_key(
            batch.f("fk_chat_sessions_tenant_id_tenants"),
            "tenants",
            ["tenant_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_foreign_key(
            batch.f("fk_chat_sessions_assignee_id_agents"),
            "agents",
            ["assignee_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_unique_constraint(
            batch.f("uq_chat_sessions_customer_token_hash"), ["customer_token_hash"]
        )
        batch.create_index(
            batch.f("ix_chat_sessions_tenant_id_last_activity_at_id"),
            ["tenant_id", "last_activity_at", "id"],
        )
        batch.create_index(
            batch.f("ix_chat_sessions_tenant_id_status_last_activity_at_id"),
            ["tenant_id", "status", "last_activity_at", "id"],
        )
        batch.create_index(
            batch.f("ix_chat_sessions_tenant_id_assignee_id_last_activity_at_id"),
            ["tenant_id", "assignee_id", "last_activity_at", "id"],
        )

    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(batch.f("ck_messages_author_type"), type_="check")
        batch.create_check_constraint(
            batch.f("ck_messages_author_type"),
            sa.column("author_type").in_(["customer", "service_agent", "system"]),
        )
        batch.add_column(
            sa.Column(
                "kind",
                _enum("message_kind", "message", "event"),
                nullable=False,
                server_default="message",
            )
        )
        batch.add_column(
            sa.Column(
                "visibility",
                _enum("visibility", "public", "internal"),
                nullable=False,
                server_default="public",
            )
        )
        batch.add_column(sa.Column("author_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("event", sa.JSON(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("kind", server_default=None, existing_nullable=False)
        batch.alter_column("visibility", server_default=None, existing_nullable=False)
        batch.alter_column("deleted", server_default=None, existing_nullable=False)

    op.create_table(
        "session_tags",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_session_tags_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "tag", name=op.f("pk_session_tags")),
    )
    op.create_table(
        "session_reads",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("reader_id", sa.Uuid(), nullable=False),
        sa.Column("last_read_seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_session_reads_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "reader_id", name=op.f("pk_session_reads")),
    )


def downgrade() -> None:
    op.drop_table("session_reads")
    op.drop_table("session_tags")
    op.execute(sa.text("DELETE FROM messages WHERE author_type = 'system'"))
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(batch.f("ck_messages_visibility"), type_="check")
        batch.drop_constraint(batch.f("ck_messages_message_kind"), type_="check")
        for column in ("event", "deleted", "edited_at", "author_id", "visibility", "kind"):
            batch.drop_column(column)
        batch.drop_constraint(batch.f("ck_messages_author_type"), type_="check")
        batch.create_check_constraint(
            batch.f("ck_messages_author_type"),
            sa.column("author_type").in_(["customer", "service_agent"]),
        )
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_index(batch.f("ix_chat_sessions_tenant_id_assignee_id_last_activity_at_id"))
        batch.drop_index(batch.f("ix_chat_sessions_tenant_id_status_last_activity_at_id"))
        batch.drop_index(batch.f("ix_chat_sessions_tenant_id_last_activity_at_id"))
        batch.drop_constraint(batch.f("uq_chat_sessions_customer_token_hash"), type_="unique")
        batch.drop_constraint(batch.f("fk_chat_sessions_assignee_id_agents"), type_="foreignkey")
        batch.drop_constraint(batch.f("fk_chat_sessions_tenant_id_tenants"), type_="foreignkey")
        batch.drop_constraint(batch.f("ck_chat_sessions_priority"), type_="check")
        batch.drop_constraint(batch.f("ck_chat_sessions_session_status"), type_="check")
        for column in (
            "last_activity_at",
            "priority",
            "assignee_id",
            "status",
            "customer_token_hash",
            "tenant_id",
        ):
            batch.drop_column(column)
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_agent_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("agents")
    op.drop_table("tenants")
