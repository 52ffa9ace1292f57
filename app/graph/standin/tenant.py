"""The Graph stand-in's knobs over HTTP, and the demo tenant `make run` serves.

Under `cor-bridge serve --sandbox` the stand-in is mounted at /sandbox/graph, and the bridge
reads it with its real Graph client (token, groups delta, transitiveMemberOf) over loopback.
An operator changes the tenant with these routes (no bearer token: they are the stand-in's
own, not Graph's):

    GET  /_standin/groups                               each group and its direct members
    POST /_standin/members {group_id, user_id, op}      op "add" or "remove"
    DELETE /_standin/groups/{id}                        the group is deleted
    POST /_standin/expire-delta {status?}               every delta token given so far expires
    POST /_standin/reset                                the demo tenant again
    GET|DELETE /_standin/calls                          what the API was asked
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from app.graph.standin.state import StandinState

ONCALL = "0bc7d487-fd6f-41a0-8362-71ec81074f11"  # mapping.yaml: by id, WS-ENG + WS-ONCALL
ENGINEERING = "e5a1c0de-0000-4000-8000-00000000e001"  # mapping.yaml: by name, WS-ENG
FINANCE = "f1a1c0de-0000-4000-8000-00000000f001"  # mapping.yaml: by name, WS-FIN
RAVI = "2f7c4b1e-8d3a-4e5f-9a6b-1c2d3e4f5a6b"
JANE = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
TENANT_USERS = {RAVI: "ravi@acme.example", JANE: "jane@acme.example"}
TENANT_GROUPS = {ONCALL: "eng-oncall", ENGINEERING: "Engineering", FINANCE: "Finance"}
TENANT_MEMBERS = {ONCALL: [RAVI], ENGINEERING: [RAVI, JANE], FINANCE: [JANE]}


def seed(state: StandinState) -> StandinState:
    """The demo tenant: Ravi in eng-oncall and Engineering, Jane in Engineering and Finance
    (the COR sandbox knows both under MICROSOFT_DYNAMICS)."""
    state.reset()
    for group_id, name in TENANT_GROUPS.items():
        state.add_group(group_id, name)
    for user_id, upn in TENANT_USERS.items():
        state.add_user(user_id, upn, mail=upn)
    for group_id, members in TENANT_MEMBERS.items():
        for user_id in members:
            state.add_member(group_id, user_id)
    state.changes.clear()  # the tenant as it stands: no history before the bridge looks
    return state


class MemberChange(BaseModel):
    """One membership change an operator makes."""

    group_id: str = Field(min_length=1, max_length=100)
    user_id: str = Field(min_length=1, max_length=100)
    op: Literal["add", "remove"]


class Expiry(BaseModel):
    """How Graph refuses an expired token: 400 syncStateNotFound for groups, 410 elsewhere."""

    status: Literal[400, 410] = 400


def add_knobs(app: FastAPI, state: StandinState) -> None:
    """The operator's routes on the stand-in app."""

    @app.get("/_standin/groups")
    async def groups() -> dict[str, Any]:
        with state.lock:
            found = [
                {**g, "members": [state.users.get(u, {"id": u}) for u in state.members.get(i, [])]}
                for i, g in state.groups.items()
            ]
        return {"groups": found}

    @app.post("/_standin/members")
    async def members(change: MemberChange) -> Response:
        if change.group_id not in state.groups:
            return JSONResponse({"detail": f"no group {change.group_id}"}, status_code=404)
        if change.user_id not in state.users:
            return JSONResponse({"detail": f"no user {change.user_id}"}, status_code=404)
        if change.op == "add":
            state.add_member(change.group_id, change.user_id)
        else:
            state.remove_member(change.group_id, change.user_id)
        return Response(status_code=204)

    @app.delete("/_standin/groups/{group_id}")
    async def delete_group(group_id: str) -> Response:
        if group_id not in state.groups:
            return JSONResponse({"detail": f"no group {group_id}"}, status_code=404)
        state.delete_group(group_id)
        return Response(status_code=204)

    @app.post("/_standin/expire-delta")
    async def expire(expiry: Expiry | None = None) -> Response:
        state.expire_delta_tokens((expiry or Expiry()).status)
        return Response(status_code=204)

    @app.post("/_standin/reset")
    async def reset() -> Response:
        seed(state)
        return Response(status_code=204)

    @app.get("/_standin/calls")
    async def calls(path_contains: str = "") -> dict[str, Any]:
        return {"calls": state.calls_to(path_contains)}

    @app.delete("/_standin/calls")
    async def forget_calls() -> Response:
        with state.lock:
            state.calls.clear()
        return Response(status_code=204)
