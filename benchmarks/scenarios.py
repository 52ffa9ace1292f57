"""The five measurements, each on a fresh database; every function returns plain numbers."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from benchmarks import ingest, procs, world
from benchmarks.procs import SCIM_TOKEN, running

CEILING_LUA = Path(__file__).with_name("cor_detach.lua")
HOLD = "3600"  # BRIDGE_DELIVERY_DELAY_SECONDS that keeps the worker out of a request benchmark


def _count(url: str, sql: str) -> int:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def _wait_drained(url: str, timeout: float) -> float:
    """Seconds until no job is pending or running."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _count(url, "SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')") == 0:
            return time.monotonic() - start
        time.sleep(0.25)
    raise RuntimeError(f"jobs still open after {timeout}s")


def _detach_calls(cor: procs.Proc, path: str = "/detach") -> list[dict[str, Any]]:
    reply = httpx.get(cor.url + "/sandbox/cor/calls", params={"path_contains": path}, timeout=60)
    calls: list[dict[str, Any]] = reply.json()["calls"]
    return calls


def standin_ceiling(cor: procs.Proc, connections: int, seconds: float) -> float:
    """Detaches/s the COR stand-in answers on its own, wrk at `connections`; its call log is
    cleared afterwards."""
    base = cor.url + "/sandbox/cor"
    token = httpx.post(
        base + "/v1/oauth/token", params={"grant_type": "client_credentials"},
        auth=("sandbox-client", "sandbox-secret"), timeout=10,
    ).json()["access_token"]  # fmt: skip
    argv = [
        ingest.find_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "-s", str(CEILING_LUA), base + "/v2/integrations/users/ceiling0@acme.example/detach",
        "--", token,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603
    rate = next(ln for ln in done.stdout.splitlines() if ln.startswith("Requests/sec:"))
    httpx.delete(base + "/calls", timeout=10).raise_for_status()
    return float(rate.split(":")[1])


def drain(
    dbs: world.Databases, kind: str, workdir: Path, count: int, latency_ms: float,
    concurrency: int,
) -> dict[str, Any]:  # fmt: skip
    with dbs.fresh(kind) as url:
        world.seed_pending(url, count, "drain", world.DRAIN_GROUP)
        with running(
            procs.standin(workdir, latency_ms, f"drain:{count},ceiling:1"), "/sandbox/cor/calls"
        ) as cor:
            alone = [standin_ceiling(cor, c, 3.0) for c in (concurrency, 4 * concurrency)]
            bridge = procs.bridge(
                workdir, url, cor.url + "/sandbox/cor",
                bridge_worker_concurrency=str(concurrency),
            )  # fmt: skip
            with running(bridge, "/healthz"):
                _wait_drained(url, timeout=max(120.0, count / 20))
            calls = _detach_calls(cor)
        done = _count(url, "SELECT count(*) FROM jobs WHERE state = 'done'")
    times = sorted(datetime.fromisoformat(c["at"]) for c in calls)
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else float("nan")
    rate = (len(times) - 1) / span
    limit = concurrency / (latency_ms / 1000)
    ok = sum(1 for c in calls if c["status"] == 200)
    return {"jobs": count, "calls": len(calls), "ok": ok, "done": done, "rate": rate,
            "limit": limit, "seconds": span, "concurrency": concurrency,
            "standin": alone[0], "standin_wide": alone[1]}  # fmt: skip


def coalesce(
    dbs: world.Databases, kind: str, workdir: Path, removals: int, groups: int,
    per_delivery: int, latency_ms: float, delay: float,
) -> dict[str, Any]:  # fmt: skip
    login = "coal0@acme.example"
    with (
        dbs.fresh(kind) as url,
        running(procs.standin(workdir, latency_ms, "coal:1"), "/sandbox/cor/calls") as cor,
    ):
        bridge = procs.bridge(
            workdir, url, cor.url + "/sandbox/cor", bridge_delivery_delay_seconds=str(delay)
        )
        with running(bridge, "/healthz"):
            started = time.monotonic()
            asyncio.run(_send_removals(bridge.url, login, removals, groups, per_delivery))
            sent = time.monotonic() - started
            _wait_drained(url, timeout=120)
        calls = _detach_calls(cor, f"/users/{login}/detach")
        jobs = _count(url, "SELECT count(*) FROM jobs")
    return {"removals": removals, "groups": groups, "calls": len(calls), "jobs": jobs,
            "delay": delay, "send_seconds": sent}  # fmt: skip


async def _send_removals(url: str, login: str, removals: int, groups: int, per: int) -> None:
    """`removals` removals of one user, cycling through `groups` groups, `per` a delivery,
    four deliveries at a time, each event a millisecond after the one before."""
    runtag = secrets.token_hex(4)
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    headers = {"Authorization": procs.OKTA_SECRET}
    bodies = []
    for start in range(0, removals, per):
        events = [
            ingest.okta_event(
                f"{runtag}-0000-{i:04x}-4000-{0:012x}",
                (t0 + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
                world.coalesce_group(i % groups),
                login,
            )
            for i in range(start, min(removals, start + per))
        ]
        bodies.append({"eventType": "com.okta.event_hook", "data": {"events": events}})
    limit = asyncio.Semaphore(4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:

        async def post(body: dict[str, Any]) -> None:
            async with limit:
                (await http.post("/hooks/okta", json=body)).raise_for_status()

        await asyncio.gather(*(post(b) for b in bodies))


def scim(
    dbs: world.Databases, kind: str, workdir: Path, members: int, per_patch: int
) -> dict[str, Any]:
    with dbs.fresh(kind) as url, running(procs.standin(workdir, 0), "/sandbox/cor/calls") as cor:
        group_id, user_ids = world.seed_scim_group(url, members)
        bridge = procs.bridge(
            workdir, url, cor.url + "/sandbox/cor", bridge_delivery_delay_seconds=HOLD
        )
        with running(bridge, "/healthz"):
            took = _remove_members(bridge.url, group_id, user_ids, per_patch)
        jobs = _count(url, "SELECT count(*) FROM jobs WHERE state = 'pending'")
        left = _count(url, "SELECT count(*) FROM scim_members")
    took.sort()
    return {"members": members, "patches": len(took), "total": sum(took),
            "p50_ms": statistics.median(took) * 1000,
            "p99_ms": ingest._pct(took, 99) * 1000, "max_ms": took[-1] * 1000,
            "jobs": jobs, "members_left": left}  # fmt: skip


def _remove_members(url: str, group_id: str, user_ids: list[str], per: int) -> list[float]:
    """Entra's way: one PATCH after another, each removing `per` members by value."""
    took = []
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        for start in range(0, len(user_ids), per):
            body = {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "Remove", "path": "members",
                    "value": [{"value": uid} for uid in user_ids[start : start + per]],
                }],
            }  # fmt: skip
            began = time.perf_counter()
            reply = http.patch(f"/scim/v2/Groups/{group_id}", json=body)
            took.append(time.perf_counter() - began)
            if reply.status_code not in (200, 204):
                raise RuntimeError(f"SCIM PATCH answered {reply.status_code}: {reply.text[:300]}")
    return took


def memory(
    dbs: world.Databases, kind: str, workdir: Path, pending: int, seconds: float
) -> dict[str, Any]:
    """Peak RSS of the bridge working through `pending` rows while COR refuses connections."""
    with dbs.fresh(kind) as url:
        world.seed_pending(url, pending, "mem", world.DRAIN_GROUP)
        nowhere = f"http://127.0.0.1:{procs.free_port()}/sandbox/cor"
        with running(procs.bridge(workdir, url, nowhere), "/healthz") as bridge:
            deadline = time.monotonic() + seconds
            with httpx.Client(base_url=bridge.url, timeout=30) as http:
                while time.monotonic() < deadline:
                    http.get("/readyz")
                    http.get("/metrics")
                    time.sleep(1)
            hwm, rss = procs.peak_rss_mb(bridge.pid)
        tried = _count(url, "SELECT count(*) FROM jobs WHERE attempts > 0")
    return {"pending": pending, "hwm_mb": hwm, "rss_mb": rss, "tried": tried, "seconds": seconds}
