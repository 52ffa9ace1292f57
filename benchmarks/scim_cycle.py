"""An Entra-style initial provisioning cycle at tenant scale, one request after another.

For each user: `GET /Users?filter=userName eq "..."` (nothing yet), then `POST /Users`; for
each group: `GET /Groups?filter=displayName eq "..."`, `POST /Groups`, then member PATCHes of
100. What counts is that a request costs the same with 10,000 users stored as with 100: the
median of the last tenth of the user requests over the median of the first tenth. Beside it,
the bridge's own CPU time per request in those tenths (from /proc): wall time on a shared
machine moves with the neighbours, CPU time shows whether the bridge's work grows.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks import ingest, procs, world
from benchmarks.procs import SCIM_TOKEN, running

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PER_GROUP = 100


def scim_cycle(
    dbs: world.Databases, kind: str, workdir: Path, users: int, groups: int
) -> dict[str, Any]:
    """Run the cycle against a fresh database; per-request timings and the flatness ratio."""
    with dbs.fresh(kind) as url, running(procs.standin(workdir, 0), "/sandbox/cor/calls") as cor:
        bridge = procs.bridge(workdir, url, cor.url + "/sandbox/cor")
        with running(bridge, "/healthz"):
            headers = {
                "Authorization": f"Bearer {SCIM_TOKEN}",
                "Content-Type": "application/scim+json",
            }
            with httpx.Client(base_url=bridge.url, headers=headers, timeout=60) as http:
                started = time.perf_counter()
                user_times, ids, cpu = _users(http, users, lambda: cpu_seconds(bridge.pid))
                group_times = _groups(http, groups, ids)
                seconds = time.perf_counter() - started
    every = sorted(user_times + group_times)
    first, last = _ends(user_times)
    lookups, creates = _ends(user_times[0::2]), _ends(user_times[1::2])
    return {
        "users": users, "groups": groups, "requests": len(every), "seconds": seconds,
        "rate": len(every) / seconds, "p50_ms": statistics.median(every) * 1000,
        "p99_ms": ingest._pct(every, 99) * 1000, "first_ms": first * 1000,
        "last_ms": last * 1000, "flat": last / first,
        "lookup_ms": [t * 1000 for t in lookups], "create_ms": [t * 1000 for t in creates],
        "cpu_ms": cpu, "cpu_flat": cpu[1] / cpu[0] if cpu[0] else 0.0,
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ends(took: list[float]) -> tuple[float, float]:
    """The median of the first tenth and of the last tenth."""
    tenth = max(len(took) // 10, 1)
    return statistics.median(took[:tenth]), statistics.median(took[-tenth:])


def _users(
    http: httpx.Client, users: int, cpu: Callable[[], float]
) -> tuple[list[float], list[str], tuple[float, float]]:
    """Per-request times, the ids made, and the bridge's CPU ms a request in the first and
    the last tenth of the users."""
    took: list[float] = []
    ids: list[str] = []
    tenth = max(users // 10, 1)
    marks: dict[int, float] = {}
    for n in range(users):
        if n in (0, tenth, users - tenth):
            marks[n] = cpu()
        name = f"cycle{n:06}@acme.example"
        took.append(_timed(http, "GET", "/scim/v2/Users", 200, params={
            "filter": f'userName eq "{name}"'}))  # fmt: skip
        body = {"schemas": [USER], "userName": name, "externalId": f"cycle{n}", "active": True}
        began = time.perf_counter()
        reply = http.post("/scim/v2/Users", json=body)
        took.append(time.perf_counter() - began)
        _expect(reply, 201)
        ids.append(reply.json()["id"])
    marks[users] = cpu()
    per_request = 1000 / (2 * tenth)  # two requests a user
    first = (marks[tenth] - marks[0]) * per_request
    last = (marks[users] - marks[users - tenth]) * per_request
    return took, ids, (first, last)


def _groups(http: httpx.Client, groups: int, ids: list[str]) -> list[float]:
    took: list[float] = []
    for g in range(groups):
        name = f"cycle-group-{g:04}"
        took.append(_timed(http, "GET", "/scim/v2/Groups", 200, params={
            "filter": f'displayName eq "{name}"'}))  # fmt: skip
        began = time.perf_counter()
        reply = http.post("/scim/v2/Groups", json={"schemas": [GROUP], "displayName": name})
        took.append(time.perf_counter() - began)
        _expect(reply, 201)
        group_id = reply.json()["id"]
        members = [ids[(g * PER_GROUP + i) % len(ids)] for i in range(PER_GROUP)]
        add = {"op": "Add", "path": "members", "value": [{"value": m} for m in members]}
        body = {"schemas": [PATCH], "Operations": [add]}
        took.append(_timed(http, "PATCH", f"/scim/v2/Groups/{group_id}", 204, json=body))
    return took


def _timed(http: httpx.Client, method: str, path: str, status: int, **kwargs: Any) -> float:
    began = time.perf_counter()
    reply = http.request(method, path, **kwargs)
    took = time.perf_counter() - began
    if reply.status_code not in (status, 200):
        _expect(reply, status)
    return took


def _expect(reply: httpx.Response, status: int) -> None:
    if reply.status_code != status:
        raise RuntimeError(f"SCIM answered {reply.status_code}: {reply.text[:300]}")
