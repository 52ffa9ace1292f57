"""The COR sandbox (app/sandbox/) in a process of its own, seeded with benchmark users and a
fixed latency on every detach (the sandbox's own /faults knob)."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from app.sandbox import DEFAULT_USERS, WORKSPACES, FaultSpec, SeedUser, create_sandbox


def seed(spec: str) -> list[SeedUser]:
    """`prefix:count,...` -> users prefix0@acme.example ... holding every workspace."""
    users = list(DEFAULT_USERS)
    for part in filter(None, spec.split(",")):
        prefix, _, count = part.partition(":")
        for i in range(int(count or 1)):
            login = f"{prefix}{i}@acme.example"
            users.append(
                SeedUser(id=login, source="OKTA", name=login, email=login, workspaces=[*WORKSPACES])
            )
    return users


def main() -> None:
    port, latency_ms = int(sys.argv[1]), float(sys.argv[2])
    sandbox = create_sandbox(seed(sys.argv[3] if len(sys.argv) > 3 else ""))
    if latency_ms > 0:
        delay = FaultSpec(delay_seconds=latency_ms / 1000, times=10**9, path_contains="/detach")
        sandbox.state.sandbox.faults.append(delay)
    app = FastAPI()
    app.mount("/sandbox/cor", sandbox)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
