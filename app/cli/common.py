"""What every `cor-bridge` command shares: settings, failing with a message, the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from pydantic import ValidationError

from app.errors import ConfigError
from app.settings import Settings
from app.store import Database


def load_settings() -> Settings:
    """The settings from the environment (and .env), or exit 2 naming each bad one."""
    try:
        return Settings()
    except ValidationError as exc:
        fail(
            "settings: "
            + "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        )


def fail(message: str) -> NoReturn:
    """Print `cor-bridge: message` on stderr and exit 2."""
    typer.echo(f"cor-bridge: {message}", err=True)
    raise typer.Exit(2)


@contextmanager
def database(settings: Settings) -> Iterator[Database]:
    """The bridge's database, migrated; closed when the command is done with it."""
    try:
        db = Database(settings.bridge_database_url)
        db.migrate()
    except ConfigError as exc:
        fail(str(exc))
    try:
        yield db
    finally:
        db.dispose()
