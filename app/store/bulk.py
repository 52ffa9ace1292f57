"""Many rows in one INSERT with one parameter per statement or column: from arrays.

A multi-row `INSERT ... VALUES (...), (...)` binds one parameter per value: SQLAlchemy
processes each row's values and builds a statement as long as the batch, which the driver
then parses placeholder by placeholder (psycopg's `_split_query`; the statement is too long
for its cache). At fifty events a delivery that was most of intake's write time. Here the
rows travel as arrays: PostgreSQL reads one array per column (`unnest`), SQLite one JSON
document of rows (`json_each`). The statement text depends only on the columns, so both
engines keep it prepared.

Each value goes through its column type's own bind processing first (UTC times, NUL in
PostgreSQL text, booleans), so what is stored is what a plain insert of the table stores.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Connection, Dialect, Table

from app.store.types import Str, Txt, UTCDateTime

Convert = Callable[[Any], Any] | None


def insert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: str = "",
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert `rows` (values in `columns` order) in one statement; the `returning` columns of
    the rows written, in no promised order. `conflict`: an `ON CONFLICT ...` clause, as SQL."""
    if not rows:
        return []
    dialect = conn.dialect
    sql, converts = _statement(dialect, table, tuple(columns), conflict, tuple(returning))
    by_column = [
        list(column) if convert is None else _converted(convert, column)
        for convert, column in zip(converts, zip(*rows, strict=True), strict=True)
    ]
    if dialect.name == "postgresql":
        results = [conn.exec_driver_sql(sql, tuple(by_column))]
    else:
        document = json.dumps(list(zip(*by_column, strict=True)))
        if "\\u0000" not in document:
            results = [conn.exec_driver_sql(sql, (document,))]
        else:  # SQLite's JSON functions end a string at NUL: those rows go one by one
            one = _one_row(dialect, table, tuple(columns), conflict, tuple(returning))
            results = [conn.exec_driver_sql(one, row) for row in zip(*by_column, strict=True)]
    return [tuple(r) for result in results for r in result] if returning else []


def _converted(convert: Callable[[Any], Any], column: Sequence[Any]) -> list[Any]:
    """The column's values converted; a time is converted once however often it comes (a
    change's rows repeat the call's `now`, and the change's own time, up to eight times)."""
    if not isinstance(convert, _Memo):
        return [convert(v) for v in column]
    done: dict[Any, Any] = {}
    out = []
    for value in column:
        found = done.get(value, _MISSING)
        if found is _MISSING:
            found = done[value] = convert(value)
        out.append(found)
    return out


_MISSING = object()


class _Memo:
    """A conversion worth remembering within a column (times: hashable, often repeated)."""

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        self.convert = convert

    def __call__(self, value: Any) -> Any:
        return self.convert(value)


@lru_cache(maxsize=64)
def _statement(
    dialect: Dialect,
    table: Table,
    columns: tuple[str, ...],
    conflict: str,
    returning: tuple[str, ...],
) -> tuple[str, list[Convert]]:
    if dialect.name == "postgresql":
        # %b: the arrays travel in PostgreSQL's binary format. In the text format psycopg
        # quotes every element with a regular expression: JSON's quotes made that most of
        # intake's CPU on PostgreSQL at fifty events a delivery (docs/performance.md).
        arrays = ", ".join(f"%b::{_array_type(dialect, table.c[c].type)}[]" for c in columns)
        source = f"SELECT * FROM unnest({arrays})"  # noqa: S608 - the schema's names
    else:
        picks = ", ".join(f"value ->> {i}" for i in range(len(columns)))
        # WHERE true: SQLite would read an ON CONFLICT after a bare FROM as a join's ON.
        source = f"SELECT {picks} FROM json_each(?) WHERE true"  # noqa: S608
    sql = _sql(dialect, table, columns, source, conflict, returning)
    return sql, [_convert(dialect, table.c[c].type) for c in columns]


@lru_cache(maxsize=64)
def _one_row(
    dialect: Dialect,
    table: Table,
    columns: tuple[str, ...],
    conflict: str,
    returning: tuple[str, ...],
) -> str:
    marks = ", ".join("?" for _ in columns)
    return _sql(dialect, table, columns, f"VALUES ({marks})", conflict, returning)


def _sql(
    dialect: Dialect,
    table: Table,
    columns: tuple[str, ...],
    source: str,
    conflict: str,
    returning: tuple[str, ...],
) -> str:
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    sql = f"INSERT INTO {quote(table.name)} ({names}) {source} {conflict}".rstrip()
    if returning:
        sql += " RETURNING " + ", ".join(quote(c) for c in returning)
    return sql


def _array_type(dialect: Dialect, type_: Any) -> str:
    if isinstance(type_, JSON):
        return "json"
    return str(type_.dialect_impl(dialect).compile(dialect=dialect))


def _convert(dialect: Dialect, type_: Any) -> Convert:
    """The column's bind processing; JSON as text (SQLAlchemy's JSON stores None as 'null')."""
    if isinstance(type_, JSON):
        return json.dumps
    if isinstance(type_, Str | Txt) and dialect.name != "postgresql":
        return None  # they change nothing on SQLite: a call per value saved
    if isinstance(type_, UTCDateTime) and dialect.name != "postgresql":
        return _Memo(_sqlite_time)
    processor: Convert = type_.dialect_impl(dialect).bind_processor(dialect)
    if isinstance(type_, UTCDateTime) and processor is not None:
        return _Memo(processor)
    return processor


def _sqlite_time(value: datetime | None) -> str | None:
    """What UTCDateTime and SQLAlchemy's SQLite DATETIME store ("2026-12-01 17:42:48.000123"),
    in one C call instead of a %-format of seven fields (eight values a change)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
