"""Schema migrations on SQLite and PostgreSQL: fresh, adopted, refused, concurrent, in sync."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, select, text

from app.errors import ConfigError
from app.store import Database
from app.store.migrate import alembic_config, current_revision, head_revision, shipped_head
from app.store.schema import metadata, schema_version
from tests.integration.harness import clean_env


def migrated(url: str) -> Database:
    database = Database(url)
    database.migrate()
    return database


# Tables and indexes of later revisions, which the bridge before Alembic never made.
LATER_TABLES = {"held_changes", "directory_state", "admin_sessions", "event_jobs"}
LATER_INDEXES = {"ix_memberships_group"}


def the_old_way(url: str) -> None:
    """What the bridge did before Alembic: create_all and `schema_version` = 1."""
    database = Database(url)
    with database.begin() as conn:
        tables = [t for t in metadata.sorted_tables if t.name not in LATER_TABLES]
        metadata.create_all(conn, tables=tables)
        for name in LATER_INDEXES:
            conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(insert(schema_version).values(version=1))
    database.dispose()


def shape(conn: Connection) -> dict[str, Any]:
    """Everything the schema is made of, as the database itself reports it."""
    found = inspect(conn)
    tables: dict[str, Any] = {}
    for name in sorted(found.get_table_names()):
        if name == "alembic_version":
            continue
        tables[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in found.get_columns(name)
            ],
            "pk": found.get_pk_constraint(name)["constrained_columns"],
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"])
                for f in found.get_foreign_keys(name)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), i["unique"], _options(i))
                for i in found.get_indexes(name)
            ),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"])) for u in found.get_unique_constraints(name)
            ),
        }
    return tables


def _options(index: Any) -> list[tuple[str, str]]:
    """An index's WHERE and such, as text."""
    return sorted((k, str(v)) for k, v in (index.get("dialect_options") or {}).items())


def test_a_fresh_database_is_migrated_to_head_and_again_is_a_no_op(database_url: str):
    database = migrated(database_url)
    try:
        assert database.migrate() == head_revision()
        with database.begin() as conn:
            assert current_revision(conn) == head_revision()
            assert set(inspect(conn).get_table_names()) == {*metadata.tables, "alembic_version"}
            # A bridge from before Alembic, pointed at this database, still finds version 1.
            assert conn.execute(select(schema_version.c.version)).scalars().all() == [1]
    finally:
        database.dispose()


def test_the_head_revision_matches_schema_py(database_url: str):
    """`alembic check`: autogenerate finds nothing to add, drop or alter."""
    database = migrated(database_url)
    try:
        with database.begin() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, metadata) == []
    finally:
        database.dispose()


@pytest.fixture
def another_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second empty database on the same engine as `database_url`."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/another.db"
        return
    with request.getfixturevalue("postgres_server").database() as url:
        yield url


def test_revision_0001_is_exactly_the_schema_the_old_code_made(database_url: str, another_url: str):
    """Same tables, columns, types, keys and indexes as create_all made, so adopting is safe."""
    other = another_url
    the_old_way(other)
    old, new = Database(other), Database(database_url)
    with new.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    try:
        with old.begin() as a, new.begin() as b:
            assert shape(a) == shape(b)
            if database_url.startswith("sqlite"):
                ddl = "SELECT name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version'"
                ddl += " ORDER BY name"
                assert a.execute(text(ddl)).all() == b.execute(text(ddl)).all()
    finally:
        old.dispose()
        new.dispose()


def test_a_database_made_before_alembic_is_adopted_not_recreated(database_url: str):
    the_old_way(database_url)
    database = Database(database_url)
    try:
        with database.begin() as conn:
            conn.execute(
                text("INSERT INTO memberships VALUES ('okta', 'u', 'g', NULL, true, :at, '{}')"),
                {"at": "2026-01-01 00:00:00"},
            )
        assert database.migrate() == head_revision()
        with database.begin() as conn:
            assert current_revision(conn) == head_revision()
            assert conn.execute(text("SELECT count(*) FROM memberships")).scalar_one() == 1
    finally:
        database.dispose()


def test_an_unknown_old_schema_version_is_refused(database_url: str):
    the_old_way(database_url)
    database = Database(database_url)
    try:
        with database.begin() as conn:
            conn.execute(schema_version.update().values(version=2))
        with pytest.raises(ConfigError, match=r"schema version 2.*upgrade the bridge"):
            database.migrate()
    finally:
        database.dispose()


def test_a_database_from_a_newer_bridge_is_refused(database_url: str):
    database = migrated(database_url)
    try:
        with database.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(ConfigError, match=r"revision 9999.*upgrade the bridge") as caught:
            database.migrate()
        assert f"knows up to {head_revision()}" in str(caught.value)
        with database.begin() as conn:  # and nothing was touched
            assert current_revision(conn) == "9999"
    finally:
        database.dispose()


STARTER = """
import sys
from app.store import Database
database = Database(sys.argv[1])
print(database.migrate())
database.dispose()
"""


@pytest.mark.processes
def test_replicas_starting_at_once_migrate_once(database_url: str):
    """Four processes migrate one fresh database together: all succeed, one schema."""
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in starters]
    assert [p.returncode for p in starters] == [0] * 4, [err for _, err in results]
    assert [out.strip() for out, _ in results] == [head_revision()] * 4
    database = Database(database_url)
    try:
        with database.begin() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [
                (head_revision(),)
            ]
            assert conn.execute(select(schema_version.c.version)).scalars().all() == [1]
    finally:
        database.dispose()


def test_the_shipped_head_is_alembics_head():
    assert shipped_head() == head_revision()


RESTART = """
import sys
from app.store import Database
import app.main, app.cli
database = Database(sys.argv[1])
print(database.migrate())
database.dispose()
print(",".join(m for m in ("alembic", "jwt", "cryptography") if m in sys.modules))
"""


def test_a_restart_at_head_imports_neither_alembic_nor_the_signing_libraries(database_url: str):
    """Memory: a bridge that finds its schema at head and signs nothing stays without them."""
    migrated(database_url).dispose()
    done = subprocess.run(
        [sys.executable, "-c", RESTART, database_url],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [head_revision(), ""]
