"""Admin page sessions kept server-side, so logging out ends one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Frozen, like 0001: types spelled out (`Str(64)` is VARCHAR(64) on SQLite and TEXT on
PostgreSQL; `UTCDateTime` a naive DATETIME / TIMESTAMP).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The `admin_sessions` table: one row per admin page login, until logout or expiry."""
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(64).with_variant(sa.Text(), "postgresql"), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_admin_sessions_expires", "admin_sessions", ["expires_at"])


def downgrade() -> None:
    """Back to 0001 (every admin page session ends)."""
    op.drop_index("ix_admin_sessions_expires", table_name="admin_sessions")
    op.drop_table("admin_sessions")
