"""Column types that read and write alike on SQLite and PostgreSQL (app/store/schema.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, String, Text
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite may hand back text
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


class _SqliteLike:
    """Strings stored as SQLite stores them, on PostgreSQL too: any length, any character.

    SQLite never enforces VARCHAR(n), so PostgreSQL gets unbounded TEXT rather than a limit
    that would refuse an IdP's over-long group name, and with it the whole delivery. And
    PostgreSQL text cannot hold NUL, which a JSON body may carry: it is stored as U+FFFD.
    SQLite's DDL and values are what they would be with plain String and Text.
    """

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return Text()
        return self.impl_instance  # type: ignore[attr-defined]

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and dialect.name == "postgresql" and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


class Str(_SqliteLike, TypeDecorator[str]):
    """String(n) on SQLite, TEXT on PostgreSQL; see _SqliteLike."""

    impl = String
    cache_ok = True


class Txt(_SqliteLike, TypeDecorator[str]):
    """Text on SQLite, TEXT on PostgreSQL; see _SqliteLike."""

    impl = Text
    cache_ok = True
