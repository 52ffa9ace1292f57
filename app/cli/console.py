"""The operator commands (jobs, history, replay, dead-letters) against a running bridge or
its database."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from app import dead_letters, operations
from app.dead_letters import LetterReplay
from app.errors import InputError
from app.http.paths import DOT_SEGMENTS
from app.mapping import Mapping
from app.operations import JobPage, ReplayRequest
from app.store import Database

CHUNK = 100


class Target(Protocol):
    """Where the commands act: the admin API of a running bridge, or the database itself."""

    def list_jobs(self, page: JobPage) -> dict[str, Any]: ...

    def history(self, user: str) -> dict[str, Any]: ...

    def replay(self, request: ReplayRequest) -> dict[str, Any]: ...

    def letters(self, limit: int) -> dict[str, Any]: ...

    def replay_letters(self, request: LetterReplay) -> dict[str, Any]: ...


class Remote:
    """A running bridge's admin API (its worker picks replays up at once)."""

    def __init__(self, url: str, token: str, transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            transport=transport,
        )

    def list_jobs(self, page: JobPage) -> dict[str, Any]:
        """GET /admin/jobs."""
        params = page.model_dump(mode="json", exclude_none=True)
        return self._answer(self.http.get("/admin/jobs", params=params))

    def history(self, user: str) -> dict[str, Any]:
        """GET /admin/users/{user}/history."""
        # Quoting leaves dots alone, and a "." or ".." segment would be normalised away.
        name = user.replace(".", "%2E") if user in DOT_SEGMENTS else quote(user, safe="@")
        return self._answer(self.http.get(f"/admin/users/{name}/history"))

    def replay(self, request: ReplayRequest) -> dict[str, Any]:
        """POST /admin/replay."""
        body = request.model_dump(mode="json", exclude_none=True)
        return self._answer(self.http.post("/admin/replay", json=body))

    def letters(self, limit: int) -> dict[str, Any]:
        """GET /admin/dead-letters."""
        return self._answer(self.http.get("/admin/dead-letters", params={"limit": limit}))

    def replay_letters(self, request: LetterReplay) -> dict[str, Any]:
        """POST /admin/dead-letters/replay."""
        body = request.model_dump(mode="json")
        return self._answer(self.http.post("/admin/dead-letters/replay", json=body))

    @staticmethod
    def _answer(reply: httpx.Response) -> dict[str, Any]:
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("detail", reply.text)
            except ValueError:
                detail = reply.text
            raise InputError(
                f"the bridge answered {reply.status_code}: {detail}", reply.status_code
            )
        result: dict[str, Any] = reply.json()
        return result


class Local:
    """The database directly (a running bridge's worker sees replays at its next poll).

    A replay applies the rules with the mapping table, which `load_mapping` reads when
    (and only when) one is asked for.
    """

    def __init__(self, url: str, load_mapping: Callable[[], Mapping]) -> None:
        self.db = Database(url)
        self.load_mapping = load_mapping

    def list_jobs(self, page: JobPage) -> dict[str, Any]:
        """Jobs, newest first."""
        with self.db.begin() as conn:
            return operations.list_jobs(conn, page, page.limit, page.offset)

    def history(self, user: str) -> dict[str, Any]:
        """A user's events and jobs."""
        with self.db.begin() as conn:
            return operations.user_history(conn, user)

    def replay(self, request: ReplayRequest) -> dict[str, Any]:
        """Re-queue jobs."""
        mapping = self.load_mapping()
        with self.db.begin() as conn:
            return operations.replay_jobs(conn, mapping, request)

    def letters(self, limit: int) -> dict[str, Any]:
        """Every kind of dead letter, newest first."""
        with self.db.begin() as conn:
            return dead_letters.list_letters(conn, limit)

    def replay_letters(self, request: LetterReplay) -> dict[str, Any]:
        """Inbox and held dead letters pending again (a running bridge looks them up at its
        next poll). Unresolved removals go through intake: only a running bridge's (--url)."""
        if request.unresolved:
            raise InputError(
                "an unresolved removal goes through the bridge's intake again: "
                "replay it with --url (a running bridge)"
            )
        with self.db.begin() as conn:
            result, _ = dead_letters.replay_letters(conn, request, datetime.now(UTC))
        return result


def replay_in_chunks(target: Target, ids: list[int]) -> Iterator[dict[str, Any]]:
    """Re-queue `ids` a chunk at a time, yielding each job's result as it comes."""
    for start in range(0, len(ids), CHUNK):
        answer = target.replay(ReplayRequest(ids=ids[start : start + CHUNK]))
        yield from answer["jobs"]


@contextmanager
def opened(target: Target) -> Iterator[Target]:
    """Close what the target holds when the command ends."""
    try:
        yield target
    finally:
        if isinstance(target, Remote):
            target.http.close()
        elif isinstance(target, Local):
            target.db.dispose()


def job_lines(jobs: list[dict[str, Any]]) -> list[str]:
    """Jobs as aligned text lines."""
    rows = [("ID", "STATE", "USER", "WORKSPACE", "TRIES", "LAST", "UPDATED")]
    for j in jobs:
        last = " ".join(str(x) for x in (j.get("last_status"), j.get("last_code")) if x)
        rows.append(
            (
                str(j["id"]),
                str(j["state"]),
                str(j["cor_user_id"]),
                str(j["workspace"]),
                str(j["attempts"]),
                last or "-",
                _short_time(j.get("updated_at")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def history_lines(history: dict[str, Any]) -> list[str]:
    """A user's history as text: each event, its decision and why, then the jobs."""
    lines = [f"history of {history['user']}"]
    for e in history["events"]:
        group = e.get("group_name") or e.get("group_id") or ""
        lines.append(
            f"{_short_time(e['occurred_at'])}  {e['provider']:<5}  {e['kind']:<16}  "
            f"{group:<20}  {e['decision']}"
        )
        lines += [f"    {d}" for d in e["detail"]]
    if history["jobs"]:
        lines += ["", *job_lines(history["jobs"])]
    return lines


def as_json(data: Any) -> str:
    """JSON for `--json`, with datetimes as ISO text."""
    return json.dumps(data, indent=2, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _short_time(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    return str(value or "-")[:19].replace("T", " ")
