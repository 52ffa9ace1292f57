"""Admin page sessions: a row per login until logout or expiry (see app/ui/auth.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from app.store.schema import admin_sessions


def start_session(conn: Connection, key: str, now: datetime, expires_at: datetime) -> None:
    """Record a new session under `key` (a hash of the cookie's secret); drop expired ones."""
    conn.execute(delete(admin_sessions).where(admin_sessions.c.expires_at <= now))
    conn.execute(insert(admin_sessions).values(id=key, created_at=now, expires_at=expires_at))


def session_active(conn: Connection, key: str, now: datetime) -> bool:
    """True while the session under `key` exists and has not expired."""
    query = select(admin_sessions.c.id).where(
        admin_sessions.c.id == key, admin_sessions.c.expires_at > now
    )
    return conn.execute(query).first() is not None


def end_session(conn: Connection, key: str) -> bool:
    """Forget the session under `key`; False when there was none."""
    return conn.execute(delete(admin_sessions).where(admin_sessions.c.id == key)).rowcount > 0
