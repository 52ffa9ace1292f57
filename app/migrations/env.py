"""Alembic's environment: runs the revisions on a connection the bridge hands over.

At start, `app.store.migrate` passes its connection (in a transaction that holds the
migration lock) as `config.attributes["connection"]`. The `alembic` command line, which
developers use to write a revision (see the README), gets one from BRIDGE_DATABASE_URL,
else from alembic.ini's `sqlalchemy.url`, and takes the same lock.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from app.store.schema import metadata


def run(connection: Connection) -> None:
    """Run the revisions Alembic asked for, inside the caller's transaction."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: autogenerate writes batch operations (copy and
        # move), which are plain ALTERs on PostgreSQL.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_command_line() -> None:
    """`alembic ...` by hand: the same engine settings and lock as the bridge's start."""
    from app.store.db import Database, lock_migrations

    url = os.environ.get("BRIDGE_DATABASE_URL") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set BRIDGE_DATABASE_URL (or sqlalchemy.url in alembic.ini)")
    db = Database(url)
    try:
        with db.begin() as conn:
            lock_migrations(conn)
            run(conn)
    finally:
        db.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    run_from_command_line()
