"""All SQL lives here: schema, outbox, memberships, event log (SQLite and PostgreSQL)."""

from app.store.db import Database

__all__ = ["Database"]
