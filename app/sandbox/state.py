"""The COR stand-in's state: users and their workspaces, tokens, calls, queued faults."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field, field_validator

SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_CLIENT_SECRET = "sandbox-secret"  # noqa: S105 - a published demo credential
TOKEN_LIFETIME_SECONDS = 3600

COR_SOURCES: tuple[str, ...] = (
    "JIRA", "SALESFORCE", "ADVERTMIND", "QUICKBOOKS", "ZAPIER", "OKTA", "MICROSOFT_DYNAMICS",
    "GITHUB", "MICROSOFT_TEAMS", "VBS", "SAP", "GLOBANT",
)  # fmt: skip
# Workspace external id -> (COR numeric id, name).
WORKSPACES: dict[str, tuple[int, str]] = {
    "WS-ENG": (1, "Engineering"),
    "WS-ONCALL": (2, "On-call"),
    "WS-FIN": (3, "Finance"),
    "WS-OPS": (4, "Operations"),
}
_STAMP = "2026-01-15 22:42:15"
_FIRST_USER_ID = 8541
UNAUTHORIZED = {"error": 401, "message": "Unauthorized"}


class SeedUser(BaseModel):
    """A COR user as the sandbox holds it; `id` is the external id, keyed with `source`."""

    id: str = Field(min_length=1)
    source: str
    name: str
    email: str
    workspaces: list[str] = Field(default_factory=list)


DEFAULT_USERS: list[SeedUser] = [
    SeedUser(id="jane@acme.example", source="OKTA", name="Jane Doe",
             email="jane@acme.example", workspaces=["WS-ENG", "WS-ONCALL", "WS-FIN"]),
    SeedUser(id="bob@acme.example", source="OKTA", name="Bob Stone",
             email="bob@acme.example", workspaces=["WS-FIN", "WS-ENG"]),
    SeedUser(id="mia@acme.example", source="OKTA", name="Mia Wong",
             email="mia@acme.example", workspaces=["WS-ENG", "WS-ONCALL"]),
    SeedUser(id="li@acme.example", source="OKTA", name="Li Chen",
             email="li@acme.example", workspaces=["WS-ENG", "WS-ONCALL"]),
    SeedUser(id="jane@acme.example", source="MICROSOFT_DYNAMICS", name="Jane Doe",
             email="jane@acme.example", workspaces=["WS-FIN", "WS-ENG"]),
    SeedUser(id="ravi@acme.example", source="MICROSOFT_DYNAMICS", name="Ravi Rao",
             email="ravi@acme.example", workspaces=["WS-ENG", "WS-ONCALL"]),
]  # fmt: skip


class FaultSpec(BaseModel):
    """Misbehaviour for the next `times` matching COR calls; status 0 means only the delay."""

    status: int = Field(default=0, le=599)
    times: int = Field(default=1, ge=1)
    retry_after: float | None = Field(default=None, ge=0)
    body: dict[str, Any] | None = None
    delay_seconds: float = Field(default=0.0, ge=0)
    path_contains: str | None = None

    @field_validator("status")
    @classmethod
    def _check_status(cls, value: int) -> int:
        if value != 0 and value < 100:
            raise ValueError("status must be 0 (delay only) or an HTTP status 100-599")
        return value


UserKey = tuple[str, str]  # (external id, source)


class SandboxState:
    """Everything one sandbox remembers."""

    def __init__(self, seed: list[SeedUser]) -> None:
        self.seed = [user.model_copy(deep=True) for user in seed]
        self.users: dict[UserKey, SeedUser] = {}
        self.ids: dict[UserKey, int] = {}
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.calls: list[dict[str, Any]] = []
        self.faults: list[FaultSpec] = []
        self.seq = 0
        self.reset()

    def reset(self) -> None:
        """Seed users back; calls, faults and tokens forgotten."""
        self.users.clear()
        self.ids.clear()
        self.tokens.clear()
        self.calls.clear()
        self.faults.clear()
        self.seq = 0
        for user in self.seed:
            problem = self.put_user(user)
            if problem:
                raise ValueError(f"bad sandbox seed user {user.id!r}: {problem}")

    def put_user(self, user: SeedUser) -> str | None:
        """Create or replace a user (keeping its numeric id); return a problem, if any."""
        problem = user_problem(user)
        if problem:
            return problem
        key = (user.id, user.source)
        self.ids.setdefault(key, _FIRST_USER_ID + len(self.ids))
        stored = user.model_copy(deep=True)
        stored.workspaces = list(dict.fromkeys(user.workspaces))
        self.users[key] = stored
        return None

    def render_user(self, key: UserKey) -> dict[str, Any]:
        """The user as COR's attach and detach replies show it."""
        user, cor_id = self.users[key], self.ids[key]
        return {
            "id": cor_id,
            "name": user.name,
            "email": user.email,
            "workspaces": [render_workspace(w, user.source, cor_id) for w in user.workspaces],
        }

    def issue_token(self) -> str:
        """A fresh bearer token."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = time.monotonic() + TOKEN_LIFETIME_SECONDS
        return token

    def bearer_ok(self, header: str | None) -> bool:
        """Whether an Authorization header carries an issued, unexpired, unrevoked token."""
        scheme, _, token = (header or "").partition(" ")
        expiry = self.tokens.get(token.strip())
        return scheme.lower() == "bearer" and expiry is not None and expiry > time.monotonic()

    def record_call(
        self, request: Request, path: str, user_id: str | None, raw: bytes
    ) -> dict[str, Any]:
        """Append a call to the log; the caller fills in `status` when it answers."""
        self.seq += 1
        call: dict[str, Any] = {
            "seq": self.seq, "at": datetime.now(UTC).isoformat(), "method": request.method,
            "path": path, "raw_path": relative_raw_path(request), "user_id": user_id,
            "body": parse_json(raw), "status": None, "fault": False,
        }  # fmt: skip
        self.calls.append(call)
        return call

    def take_fault(self, path: str) -> FaultSpec | None:
        """Consume one use of the oldest queued fault that matches this path."""
        for fault in self.faults:
            if fault.path_contains is None or fault.path_contains in path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None


def user_problem(user: SeedUser) -> str | None:
    """Why COR would refuse this user, if it would."""
    if user.source not in COR_SOURCES:
        return f"source must be one of {', '.join(COR_SOURCES)}"
    unknown = [w for w in user.workspaces if w not in WORKSPACES]
    if unknown:
        return f"unknown workspace: {', '.join(unknown)}"
    return None


def render_workspace(external_id: str, source: str, user_id: int) -> dict[str, Any]:
    ws_id, name = WORKSPACES[external_id]
    return {
        "id": ws_id,
        "name": name,
        "active": True,
        "metadata": {},
        "json_integrations": {
            "integration_id": 10 + COR_SOURCES.index(source),
            "is_active": True,
            "source": source,
            "destination": None,
            "status": "NOT_SEND",
            "origin_external_id": external_id,
            "destination_external_id": None,
        },
        "created_at": _STAMP,
        "updated_at": _STAMP,
        "pivot": {"workspace_id": ws_id, "user_id": user_id, "percentage": 100},
    }


def parse_json(raw: bytes) -> Any:
    """A body as JSON, or None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def relative_path(request: Request) -> str:
    """The decoded path without the mount point."""
    path, root = request.url.path, request.scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def relative_raw_path(request: Request) -> str:
    """The path as it arrived, percent-escapes kept, without the mount point and query."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path, root = raw.decode("latin-1").split("?", 1)[0], request.scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
