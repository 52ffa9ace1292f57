"""The IdP's own truth: changes held for a directory check, and the pollers' state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Frozen, like 0001: types spelled out.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _str(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.Text(), "postgresql")


def upgrade() -> None:
    """held_changes, directory_state, and memberships by group."""
    op.create_index("ix_memberships_group", "memberships", ["provider", "group_id"])
    op.create_table(
        "held_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("provider", _str(16), nullable=False),
        sa.Column("event_id", _str(200), nullable=False),
        sa.Column("user_id", _str(300), nullable=False),
        sa.Column("user_login", _str(300)),
        sa.Column("change", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("state", _str(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("claimed_by", _str(64)),
        sa.Column("last_error", sa.Text()),
        sa.Column("done_at", sa.DateTime()),
        sa.UniqueConstraint("provider", "event_id", name="uq_held_changes_event"),
    )
    op.create_index("ix_held_changes_due", "held_changes", ["state", "next_attempt_at"])
    op.create_index("ix_held_changes_user", "held_changes", ["user_id"])
    op.create_index("ix_held_changes_login", "held_changes", ["user_login"])
    op.create_table(
        "directory_state",
        sa.Column("name", _str(64), primary_key=True),
        sa.Column("cursor", sa.Text()),
        sa.Column("holder", _str(64)),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("last_success_at", sa.DateTime()),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_error_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime()),
    )


def downgrade() -> None:
    """Back to 0001."""
    op.drop_index("ix_memberships_group", table_name="memberships")
    op.drop_table("directory_state")
    op.drop_index("ix_held_changes_due", table_name="held_changes")
    op.drop_table("held_changes")
