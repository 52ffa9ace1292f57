"""The tables as the code uses them; app/migrations brings a database to this shape."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    UniqueConstraint,
    text,
)

from app.store.types import Str, Txt, UTCDateTime

metadata = MetaData()

# The bridge before Alembic read its schema version here; revision 0001 writes 1. Alembic's
# `alembic_version` is what counts now (see app/store/migrate.py).
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

# Every source event the bridge received: the dedupe key and the history of what was decided.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider", Str(16), nullable=False),
    Column("source_event_id", Str(200), nullable=False),
    Column("kind", Str(64), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("user_id", Str(300)),
    Column("user_login", Str(300)),
    Column("cor_user_id", Str(300)),
    Column("group_id", Str(300)),
    Column("group_name", Str(300)),
    Column("decision", Str(32), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("change", JSON),
    UniqueConstraint("provider", "source_event_id", name="uq_events_source"),
)
Index("ix_events_user", events.c.user_id)
Index("ix_events_login", events.c.user_login)
Index("ix_events_cor_user", events.c.cor_user_id)

# The memberships the bridge has seen, for the still-granted rule and deactivations.
memberships = Table(
    "memberships",
    metadata,
    Column("provider", Str(16), primary_key=True),
    Column("user_id", Str(300), primary_key=True),
    Column("group_id", Str(300), primary_key=True),
    Column("group_name", Str(300)),
    Column("member", Boolean, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("user", JSON, nullable=False),
)

# A group's members, for a deleted group and the membership sync (revision 0002).
Index("ix_memberships_group", memberships.c.provider, memberships.c.group_id)

# The outbox: one row per (COR user, workspace) to detach.
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cor_user_id", Str(300), nullable=False),
    Column("source", Str(40), nullable=False),
    Column("workspace", Str(300), nullable=False),
    Column("provider", Str(16), nullable=False),
    Column("event_id", Integer, ForeignKey("events.id"), nullable=False),
    Column("state", Str(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("solo", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime),
    Column("claimed_by", Str(64)),
    Column("last_status", Integer),
    Column("last_code", Str(64)),
    Column("last_message", Txt),
    Column("remaining", JSON),
    # Set when a re-grant arrives while the job is being delivered: a failed try then
    # cancels the job instead of retrying a detach the user no longer needs.
    Column("cancel_reason", Txt),
)
Index("ix_jobs_due", jobs.c.state, jobs.c.next_attempt_at)
Index("ix_jobs_user", jobs.c.cor_user_id)
# At most one pending detach per (user, source, workspace): a repeat removal joins it.
Index(
    "uq_jobs_pending",
    jobs.c.cor_user_id,
    jobs.c.source,
    jobs.c.workspace,
    unique=True,
    sqlite_where=text("state = 'pending'"),
    postgresql_where=text("state = 'pending'"),
)

# Every delivery attempt of every job: what COR answered and how long it took.
attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("outcome", Str(16), nullable=False),
    Column("status", Integer),
    Column("code", Str(64)),
    Column("message", Txt),
    Column("duration_ms", Integer, nullable=False),
)
Index("ix_attempts_job", attempts.c.job_id)

# What each event did to each job it names (queued, joined, cancelled, asked, kept), and at
# which line of the event's detail: the history renders these lines, with the job's id, when
# it is read (app/intake_plan.py). Events before revision 0004 have their lines in `detail`.
event_jobs = Table(
    "event_jobs",
    metadata,
    Column("event_id", Integer, ForeignKey("events.id"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("act", Str(16), nullable=False),
    Column("reason", Txt),
)

# The SCIM server's resources: what Entra ID or Okta provisioned, and group memberships.
scim_users = Table(
    "scim_users",
    metadata,
    Column("id", Str(64), primary_key=True),
    Column("user_name_key", Str(300), nullable=False, unique=True),  # lower-cased userName
    Column("external_id", Str(300)),
    Column("active", Boolean, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("modified", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)
Index("ix_scim_users_external_id", scim_users.c.external_id)

scim_groups = Table(
    "scim_groups",
    metadata,
    Column("id", Str(64), primary_key=True),
    Column("display_name_key", Str(300), nullable=False),  # lower-cased displayName
    Column("external_id", Str(300)),
    Column("data", JSON, nullable=False),  # everything but members
    Column("created", UTCDateTime, nullable=False),
    Column("modified", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)
Index("ix_scim_groups_display_name", scim_groups.c.display_name_key)
Index("ix_scim_groups_external_id", scim_groups.c.external_id)

scim_members = Table(
    "scim_members",
    metadata,
    Column("group_id", Str(64), ForeignKey("scim_groups.id"), primary_key=True),
    Column("user_id", Str(64), ForeignKey("scim_users.id"), primary_key=True),
    Column("display", Str(300)),  # as the IdP sent it
)
Index("ix_scim_members_user", scim_members.c.user_id)

# Microsoft Graph: the subscriptions the bridge created or was told about, which it renews.
graph_subscriptions = Table(
    "graph_subscriptions",
    metadata,
    Column("id", Str(100), primary_key=True),
    Column("resource", Str(300), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_renewed_at", UTCDateTime),
    Column("last_error", Txt),
    # Set by a reauthorizationRequired lifecycle event; cleared once Graph accepts.
    Column("reauthorize_requested_at", UTCDateTime),
)


def work_columns() -> list[Column[Any]]:
    """What every work table of app/store/queue.py has: its state, tries and claim."""
    return [
        Column("state", Str(16), nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", UTCDateTime, nullable=False),
        Column("lease_until", UTCDateTime),
        Column("claimed_by", Str(64)),
        Column("last_error", Txt),
        Column("done_at", UTCDateTime),
    ]


# Graph notifications as received, one row per members@delta entry: stored before the 202,
# resolved (names, logins, current groups) and handed to intake later.
graph_inbox = Table(
    "graph_inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedupe_key", Str(200), nullable=False, unique=True),  # the change's event id
    Column("base_key", Str(200), nullable=False),  # the same for every retry of an entry
    Column("subscription_id", Str(100), nullable=False),
    Column("group_id", Str(300), nullable=False),
    Column("member_id", Str(300), nullable=False),
    Column("removed", Boolean, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    *work_columns(),
)
Index("ix_graph_inbox_due", graph_inbox.c.state, graph_inbox.c.next_attempt_at)
Index("ix_graph_inbox_base", graph_inbox.c.base_key, graph_inbox.c.received_at)

# Changes held until the IdP's directory is asked (Okta: the user's current groups and
# status); the store-before-ack half of "still granted, checked at the source".
held_changes = Table(
    "held_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider", Str(16), nullable=False),
    Column("event_id", Str(200), nullable=False),
    Column("user_id", Str(300), nullable=False),
    Column("user_login", Str(300)),
    Column("change", JSON, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    *work_columns(),
    UniqueConstraint("provider", "event_id", name="uq_held_changes_event"),
)
Index("ix_held_changes_due", held_changes.c.state, held_changes.c.next_attempt_at)
Index("ix_held_changes_user", held_changes.c.user_id)
Index("ix_held_changes_login", held_changes.c.user_login)

# What each directory poller last did: its cursor, who polls (one replica at a time), errors.
directory_state = Table(
    "directory_state",
    metadata,
    Column("name", Str(64), primary_key=True),
    Column("cursor", Txt),
    Column("holder", Str(64)),
    Column("lease_until", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_error", Txt),
    Column("last_error_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
)

# Browser sessions of the admin page: one row per login, deleted at logout. The row's id is
# the SHA-256 of the secret in the cookie, so the table alone cannot be used to log in.
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("id", Str(64), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
Index("ix_admin_sessions_expires", admin_sessions.c.expires_at)
