"""`cor-bridge dead-letters list|replay`: the dead letters outside the outbox (Graph inbox
entries, held Okta changes, unresolved removals); dead jobs are `jobs --state dead` and
`replay`. Against a running bridge (--url) or its database."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError

from app.cli import console
from app.cli.common import fail
from app.cli.operator import DatabaseOption, JsonOption, TokenOption, UrlOption, acting
from app.dead_letters import LetterReplay
from app.operations import INT32_MAX

letters_cli = typer.Typer(
    help="Dead letters: list them, send them again once the cause is fixed.",
    no_args_is_help=True,
)
Ids = Annotated[list[int] | None, typer.Option(min=1, max=INT32_MAX, show_default=False)]


@letters_cli.command("list")
def list_letters(
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="at most this many of each kind")
    ] = 100,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database: DatabaseOption = None,
) -> None:
    """Every dead letter, newest first: jobs, inbox entries, held changes, unresolved removals."""
    with acting(url, token, database) as target:
        found = target.letters(limit)
    typer.echo(console.as_json(found) if as_json else "\n".join(letter_lines(found)))


@letters_cli.command("replay")
def replay_letters(
    inbox: Ids = None,
    held: Ids = None,
    unresolved: Ids = None,
    url: UrlOption = None,
    token: TokenOption = None,
    database: DatabaseOption = None,
) -> None:
    """Send dead letters again by kind and id (as `list` shows them); dead jobs: `replay`.

    Inbox entries and held changes are looked up again from scratch; an unresolved removal
    goes through the rules again with the mapping as it is now (needs --url).
    """
    try:
        ask = LetterReplay(inbox=inbox or [], held=held or [], unresolved=unresolved or [])
    except ValidationError as exc:
        fail("; ".join(e["msg"] for e in exc.errors()))
    if not (ask.inbox or ask.held or ask.unresolved):
        fail("name at least one dead letter: --inbox, --held or --unresolved ID")
    with acting(url, token, database) as target:
        result = target.replay_letters(ask)
    for kind, ids in result["replayed"].items():
        if ids:
            typer.echo(f"replayed {kind}: {' '.join(map(str, ids))}")
    for kind, ids in result["not_dead"].items():
        typer.echo(f"not a dead letter (any more) {kind}: {' '.join(map(str, ids))}")


def letter_lines(found: dict[str, Any]) -> list[str]:
    """Each kind as a titled block of lines; a kind with none says so."""
    lines: list[str] = []
    blocks = {
        "jobs": ("dead jobs (replay with `cor-bridge replay ID`)", console.job_lines),
        "inbox": ("Graph inbox entries that could not be looked up", _inbox_lines),
        "held": ("held Okta changes that could not be checked", _held_lines),
        "unresolved": ("removals with no COR user id", _unresolved_lines),
    }
    for kind, (title, render) in blocks.items():
        rows = found.get(kind, [])
        lines.append(f"{kind}: {title}: {len(rows) or 'none'}")
        if rows:
            lines += [f"  {line}" for line in render(rows)]
    return lines


def _inbox_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r['id']}  group {r['group_id']}  member {r['member_id']}  "
        f"{'removed' if r['removed'] else 'added'}  tries {r['attempts']}  {r['last_error'] or ''}"
        for r in rows
    ]


def _held_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r['id']}  {r['user_login'] or r['user_id']}  {r['kind'] or ''}  "
        f"group {(r.get('group') or {}).get('id', '-')}  tries {r['attempts']}  "
        f"{r['last_error'] or ''}"
        for r in rows
    ]


def _unresolved_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r['id']}  {r['provider']}  {r['user_login'] or r['user_id']}  {r['kind']}  "
        f"group {r['group_name'] or r['group_id'] or '-'}  {'; '.join(r['detail'])}"
        for r in rows
    ]
