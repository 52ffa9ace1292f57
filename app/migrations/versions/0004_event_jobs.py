"""What each event did to each job: the link table the history renders job lines from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Frozen, like 0001: types spelled out. Events recorded before it keep their job lines, ids
and all, in `events.detail`; later ones keep there only their plain lines.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The `event_jobs` table: (event, line) -> job and what the event did to it."""
    op.create_table(
        "event_jobs",
        sa.Column("event_id", sa.Integer(), sa.ForeignKey("events.id"), primary_key=True),
        sa.Column("line", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("act", sa.String(16).with_variant(sa.Text(), "postgresql"), nullable=False),
        sa.Column("reason", sa.Text()),
    )


def downgrade() -> None:
    """Back to 0003 (the job lines of events recorded since lose their place in the history)."""
    op.drop_table("event_jobs")
