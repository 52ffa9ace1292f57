"""Schema migrations: the Alembic revisions in app/migrations, run when the bridge starts.

`upgrade_schema` runs on a connection whose transaction already holds the migration lock
(PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE), so of several replicas starting at
once one migrates and the others wait, then find the schema at head and do nothing. On
PostgreSQL the DDL is transactional: a failed revision leaves the database as it was.

A database made before Alembic (a `schema_version` table saying 1, no `alembic_version`)
already has revision 0001's tables: it is stamped 0001, not created again. A database at a
revision this bridge does not know was migrated by a newer bridge: refuse to start.

A database already at this bridge's head (every restart) is seen to be so with one SELECT:
Alembic (about 10 MB of a process) is imported only when there is something to do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, select, text

from app.errors import ConfigError
from app.store.schema import schema_version

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

SCRIPTS = "app:migrations"
VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"
BEFORE_ALEMBIC = "0001"  # what `schema_version` 1 (the bridge before Alembic) corresponds to


def shipped_head() -> str:
    """The newest revision shipped, read from the file names (`NNNN_name.py`, revision NNNN,
    each revising the one before); tests hold it equal to Alembic's own head."""
    found = [m.group(1) for f in VERSIONS.glob("*.py") if (m := re.match(r"(\d{4})_", f.name))]
    return max(found)


def at_head(conn: Connection) -> bool:
    """The database is at this bridge's head revision (no Alembic needed to say so)."""
    if not inspect(conn).has_table("alembic_version"):
        return False
    found = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
    return found == [shipped_head()]


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's settings, with no alembic.ini: the revisions ship inside the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPTS)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this bridge knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (None: not under Alembic yet)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade_schema(conn: Connection) -> str:
    """Create, adopt or upgrade the schema to head on `conn`; returns the head revision."""
    if at_head(conn):
        return shipped_head()
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = alembic_config(conn)
    script = ScriptDirectory.from_config(config)
    context = MigrationContext.configure(conn)
    found = context.get_current_heads()
    if not found and inspect(conn).has_table(schema_version.name):
        _adopt(conn, context, script)
    known = {s.revision for s in script.walk_revisions()}
    unknown = [r for r in found if r not in known]
    if unknown:
        raise ConfigError(
            f"the database schema is at revision {', '.join(unknown)}, which this bridge does "
            f"not know (it knows up to {script.get_current_head()}): a newer bridge migrated "
            "it; upgrade the bridge"
        )
    command.upgrade(config, "head")
    return head_revision()


def _adopt(conn: Connection, context: MigrationContext, script: ScriptDirectory) -> None:
    """Stamp a database the bridge made before Alembic at the revision it matches."""
    version = conn.execute(select(schema_version.c.version)).scalar_one()
    if version != 1:
        raise ConfigError(
            f"the database says schema version {version}, which this bridge does not know; "
            "upgrade the bridge"
        )
    context.stamp(script, BEFORE_ALEMBIC)
