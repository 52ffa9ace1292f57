"""Alembic revisions of the database schema; `app.store.migrate` runs them at start."""
