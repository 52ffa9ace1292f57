"""Ingest: Okta hook deliveries under wrk, the bridge beside the bare ceiling."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from benchmarks.procs import OKTA_SECRET

LUA = Path(__file__).with_name("okta_hook.lua")
GROUP = "00g8mo0l5wuTxmoIC0h7"  # eng-oncall in the bench mapping: two workspaces


def find_wrk() -> str:
    """wrk's path; installs Debian's package as root when it is missing."""
    found = shutil.which("wrk")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        print("wrk not found; installing Debian's wrk package ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False)  # noqa: S607
        found = shutil.which("wrk")
    if found is None:
        raise SystemExit(
            "make bench needs wrk (an HTTP load generator): `apt-get install wrk` on Debian or "
            "Ubuntu, or put a wrk binary on PATH"
        )
    return found


@dataclass
class WrkResult:
    events: int  # per request
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    acked_ids: list[str]
    max_ms: float = 0.0
    cpu_ms: float = 0.0  # the server's CPU (user + system, all threads) per answered request

    @property
    def events_per_s(self) -> float:
        return (self.requests - self.errors) * self.events / self.seconds


def run_wrk(
    url: str, events: int, connections: int, seconds: float, pid: int | None = None
) -> WrkResult:
    """A closed-loop wrk run; with `pid`, also that server's CPU time per answered request
    (less at the mercy of a loaded machine than events/s: what the server itself spent)."""
    runtag = secrets.token_hex(4)
    cpu_before = cpu_seconds(pid) if pid else 0.0
    with tempfile.TemporaryDirectory(prefix="bench-ack-") as ackdir:
        argv = [
            find_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s",
            "-s", str(LUA), url + "/hooks/okta", "--",
            runtag, str(events), OKTA_SECRET, GROUP, ackdir,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
        acked = [i for f in Path(ackdir).glob("acked-*.txt") for i in f.read_text().split()]
    v = {k: int(x) for k, _, x in (p.partition("=") for p in line.split()[1:])}
    errors = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]
    return WrkResult(
        events=events,
        connections=connections,
        requests=v["requests"],
        seconds=v["duration_us"] / 1e6,
        p50_ms=v["p50_us"] / 1000,
        p99_ms=v["p99_us"] / 1000,
        errors=errors,
        acked_ids=acked,
        max_ms=v["max_us"] / 1000,
        cpu_ms=1000 * cpu / max(1, v["requests"] - errors),
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event_uuids(delivery_id: str, events: int) -> list[str]:
    """The uuids okta_hook.lua put in the delivery with this eventId."""
    runtag, tid, _, four, counter = delivery_id.split("-")
    return [f"{runtag}-{tid}-{j:04x}-{four}-{counter}" for j in range(events)]


def missing_events(database_url: str, results: list[WrkResult | PacedResult]) -> tuple[int, int]:
    """(acked events, acked events not in the bridge's database)."""
    wanted = {u for r in results for d in r.acked_ids for u in event_uuids(d, r.events)}
    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stored = set(
                conn.execute(
                    text("SELECT source_event_id FROM events WHERE provider = 'okta'")
                ).scalars()
            )
    finally:
        engine.dispose()
    return len(wanted), len(wanted - stored)


@dataclass
class PacedResult:
    events: int  # per request
    rate: float  # events/s asked for
    sent: int
    achieved: float  # events/s acked
    p50_ms: float
    p99_ms: float
    errors: int
    acked_ids: list[str]


def run_paced(url: str, events: int, rate: float, seconds: float) -> PacedResult:
    """Open loop: deliveries on a fixed schedule whatever the answers; a latency counts from
    when the request was due, so a stalled server cannot hide its queue (no coordinated
    omission)."""
    return asyncio.run(_paced(url, events, rate, seconds))


async def _paced(url: str, events: int, rate: float, seconds: float) -> PacedResult:
    interval = events / rate
    total = int(seconds / interval)
    runtag = secrets.token_hex(4)
    latencies: list[float] = []
    acked: list[str] = []
    errors = 0
    headers = {"Authorization": OKTA_SECRET, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:

        async def one(k: int, due: float) -> None:
            nonlocal errors
            delivery = f"{runtag}-0000-ffff-4000-{k:012x}"
            try:
                reply = await http.post("/hooks/okta", content=okta_body(delivery, events))
            except httpx.HTTPError:
                errors += 1
                return
            if reply.status_code == 200:
                latencies.append(time.perf_counter() - due)
                acked.append(delivery)
            else:
                errors += 1

        start = time.perf_counter() + 0.2
        tasks = []
        for k in range(total):
            due = start + k * interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(k + 1, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return PacedResult(
        events=events,
        rate=rate,
        sent=total,
        achieved=len(acked) * events / elapsed,
        p50_ms=_pct(latencies, 50) * 1000,
        p99_ms=_pct(latencies, 99) * 1000,
        errors=errors,
        acked_ids=acked,
    )


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def okta_body(delivery_id: str, events: int, group: str = GROUP, login: str | None = None) -> bytes:
    """The same delivery okta_hook.lua sends, built in Python."""
    published = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {
            "eventType": "com.okta.event_hook",
            "eventTypeVersion": "1.0",
            "eventId": delivery_id,
            "data": {
                "events": [
                    okta_event(uuid, published, group, login or f"u-{uuid}@acme.example")
                    for uuid in event_uuids(delivery_id, events)
                ]
            },
        }
    ).encode()


def okta_event(uuid: str, published: str, group: str, login: str) -> dict[str, object]:
    return {
        "uuid": uuid,
        "published": published,
        "eventType": "group.user_membership.remove",
        "outcome": {"result": "SUCCESS"},
        "target": [
            {"id": "00u" + login.split("@")[0][-17:], "type": "User", "alternateId": login},
            {"id": group, "type": "UserGroup", "displayName": "bench group"},
        ],
    }
