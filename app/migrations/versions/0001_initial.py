"""The schema as it was before Alembic (the old `schema_version` 1), table for table.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Frozen: it spells its types out instead of importing app.store.schema, so a later change
there cannot change what this revision did. `Str(n)` of the schema is VARCHAR(n) on
SQLite and TEXT on PostgreSQL, `Txt` is TEXT, `UTCDateTime` a naive DATETIME / TIMESTAMP.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING_ONLY = sa.text("state = 'pending'")


def _str(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.Text(), "postgresql")


def upgrade() -> None:
    """Every table, index and constraint of the first schema; `schema_version` says 1."""
    version = op.create_table("schema_version", sa.Column("version", sa.Integer(), nullable=False))
    # A bridge from before Alembic reads this; a revision it cannot run on should raise it.
    op.bulk_insert(version, [{"version": 1}])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("provider", _str(16), nullable=False),
        sa.Column("source_event_id", _str(200), nullable=False),
        sa.Column("kind", _str(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("user_id", _str(300)),
        sa.Column("user_login", _str(300)),
        sa.Column("cor_user_id", _str(300)),
        sa.Column("group_id", _str(300)),
        sa.Column("group_name", _str(300)),
        sa.Column("decision", _str(32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("change", sa.JSON()),
        sa.UniqueConstraint("provider", "source_event_id", name="uq_events_source"),
    )
    op.create_index("ix_events_user", "events", ["user_id"])
    op.create_index("ix_events_login", "events", ["user_login"])
    op.create_index("ix_events_cor_user", "events", ["cor_user_id"])

    op.create_table(
        "memberships",
        sa.Column("provider", _str(16), primary_key=True),
        sa.Column("user_id", _str(300), primary_key=True),
        sa.Column("group_id", _str(300), primary_key=True),
        sa.Column("group_name", _str(300)),
        sa.Column("member", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.Column("user", sa.JSON(), nullable=False),
    )

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("cor_user_id", _str(300), nullable=False),
        sa.Column("source", _str(40), nullable=False),
        sa.Column("workspace", _str(300), nullable=False),
        sa.Column("provider", _str(16), nullable=False),
        sa.Column("event_id", sa.Integer(), sa.ForeignKey("events.id"), nullable=False),
        sa.Column("state", _str(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("solo", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("claimed_by", _str(64)),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_code", _str(64)),
        sa.Column("last_message", sa.Text()),
        sa.Column("remaining", sa.JSON()),
        sa.Column("cancel_reason", sa.Text()),
    )
    op.create_index("ix_jobs_due", "jobs", ["state", "next_attempt_at"])
    op.create_index("ix_jobs_user", "jobs", ["cor_user_id"])
    op.create_index(
        "uq_jobs_pending",
        "jobs",
        ["cor_user_id", "source", "workspace"],
        unique=True,
        sqlite_where=PENDING_ONLY,
        postgresql_where=PENDING_ONLY,
    )

    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("outcome", _str(16), nullable=False),
        sa.Column("status", sa.Integer()),
        sa.Column("code", _str(64)),
        sa.Column("message", sa.Text()),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
    )
    op.create_index("ix_attempts_job", "attempts", ["job_id"])

    op.create_table(
        "scim_users",
        sa.Column("id", _str(64), primary_key=True),
        sa.Column("user_name_key", _str(300), nullable=False, unique=True),
        sa.Column("external_id", _str(300)),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("modified", sa.DateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_scim_users_external_id", "scim_users", ["external_id"])

    op.create_table(
        "scim_groups",
        sa.Column("id", _str(64), primary_key=True),
        sa.Column("display_name_key", _str(300), nullable=False),
        sa.Column("external_id", _str(300)),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("modified", sa.DateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_scim_groups_display_name", "scim_groups", ["display_name_key"])
    op.create_index("ix_scim_groups_external_id", "scim_groups", ["external_id"])

    op.create_table(
        "scim_members",
        sa.Column("group_id", _str(64), sa.ForeignKey("scim_groups.id"), primary_key=True),
        sa.Column("user_id", _str(64), sa.ForeignKey("scim_users.id"), primary_key=True),
        sa.Column("display", _str(300)),
    )
    op.create_index("ix_scim_members_user", "scim_members", ["user_id"])

    op.create_table(
        "graph_subscriptions",
        sa.Column("id", _str(100), primary_key=True),
        sa.Column("resource", _str(300), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_renewed_at", sa.DateTime()),
        sa.Column("last_error", sa.Text()),
        sa.Column("reauthorize_requested_at", sa.DateTime()),
    )

    op.create_table(
        "graph_inbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("dedupe_key", _str(200), nullable=False, unique=True),
        sa.Column("base_key", _str(200), nullable=False),
        sa.Column("subscription_id", _str(100), nullable=False),
        sa.Column("group_id", _str(300), nullable=False),
        sa.Column("member_id", _str(300), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("state", _str(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("claimed_by", _str(64)),
        sa.Column("last_error", sa.Text()),
        sa.Column("done_at", sa.DateTime()),
    )
    op.create_index("ix_graph_inbox_due", "graph_inbox", ["state", "next_attempt_at"])
    op.create_index("ix_graph_inbox_base", "graph_inbox", ["base_key", "received_at"])


def downgrade() -> None:
    """Back to an empty database."""
    for table in (
        "graph_inbox",
        "graph_subscriptions",
        "scim_members",
        "scim_groups",
        "scim_users",
        "attempts",
        "jobs",
        "memberships",
        "events",
        "schema_version",
    ):
        op.drop_table(table)
