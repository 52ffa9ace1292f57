"""The stand-in's groups delta query: a first round of every member, then what changed."""

from __future__ import annotations

import re
import secrets
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from app.graph.standin.replies import error
from app.graph.standin.state import StandinState

_ID_EQ = re.compile(r"^id eq '([^']+)'$")
MAX_FILTER_IDS = 50


def answer_delta(state: StandinState, request: Request) -> Response:
    """Graph's groups delta: first round, nextLink pages, deltaLink rounds; 400
    syncStateNotFound (or 410) once the token expired."""
    query = request.query_params
    base = str(request.url.replace(query=""))
    with state.lock:
        if "$skiptoken" in query:
            pages = state.pending_pages.pop(query["$skiptoken"], None)
            if pages is None:
                return error(state.expired_status, "syncStateNotFound", "unknown skiptoken")
        else:
            found = _delta_round(state, query, base)
            if isinstance(found, Response):
                return found
            pages = found
        body = pages[0]
        if len(pages) > 1:
            token = secrets.token_urlsafe(8)
            state.pending_pages[token] = pages[1:]
            body = {**body, "@odata.nextLink": f"{base}?$skiptoken={token}"}
        return JSONResponse(body)


def _delta_round(state: StandinState, query: Any, base: str) -> list[dict[str, Any]] | Response:
    if "$deltatoken" in query:
        known = state.delta_tokens.get(query["$deltatoken"])
        if known is None:
            message = "The delta token is expired and data must be synchronized again."
            return error(state.expired_status, "syncStateNotFound", message)
        ids, since = known
        objects = _changes_since(state, ids, since)
    else:
        if "members" not in query.get("$select", ""):
            return error(400, "BadRequest", "select members to track them")
        parts = [_ID_EQ.match(p.strip()) for p in query.get("$filter", "").split(" or ")]
        if not parts or not all(parts):
            return error(400, "BadRequest", "only `id eq '...'` filters are supported")
        if len(parts) > MAX_FILTER_IDS:
            return error(400, "BadRequest", f"at most {MAX_FILTER_IDS} ids in a filter")
        ids = tuple(m.group(1) for m in parts if m)
        objects = [
            _group_object(
                state, g, [{"@odata.type": USER, "id": u} for u in state.members.get(g, [])]
            )
            for g in ids
            if g in state.members or g in state.groups
            if g not in state.deleted
        ]
    token = secrets.token_urlsafe(8)
    state.delta_tokens[token] = (ids, len(state.changes))
    pages = _split(objects, state.delta_page_size)
    pages[-1]["@odata.deltaLink"] = f"{base}?$deltatoken={token}"
    return pages


USER = "#microsoft.graph.user"


def _changes_since(state: StandinState, ids: tuple[str, ...], since: int) -> list[dict[str, Any]]:
    net: dict[str, dict[str, str]] = {}
    gone: list[str] = []
    for kind, group, member in state.changes[since:]:
        if group not in ids:
            continue
        if kind == "deleted":
            gone.append(group)
        else:
            net.setdefault(group, {})[member] = kind
    objects = [
        _group_object(
            state,
            g,
            [
                {
                    "@odata.type": USER,
                    "id": m,
                    **({"@removed": {"reason": "deleted"}} if k == "removed" else {}),
                }
                for m, k in members.items()
            ],
        )
        for g, members in net.items()
        if g not in gone
    ]
    return objects + [{"id": g, "@removed": {"reason": "changed"}} for g in gone]


def _group_object(
    state: StandinState, group_id: str, members: list[dict[str, Any]]
) -> dict[str, Any]:
    name = state.groups.get(group_id, {}).get("displayName")
    return {"id": group_id, "displayName": name, "members@delta": members}


def _split(objects: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Pages of at most `size` members; one group's members may span several pages."""
    pages: list[dict[str, Any]] = [{"value": []}]
    room = size
    for obj in objects:
        members = obj.get("members@delta")
        if members is None:
            pages[-1]["value"].append(obj)
            continue
        rest = list(members)
        while True:
            if room == 0:
                pages.append({"value": []})
                room = size
            part, rest = rest[:room], rest[room:]
            pages[-1]["value"].append({**obj, "members@delta": part})
            room -= len(part)
            if not rest:
                break
    return pages
