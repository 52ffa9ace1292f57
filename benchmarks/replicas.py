"""PostgreSQL replicas: one bridge against three on one database, and Okta acks while SCIM
PATCHes run on another replica (intake's turn is per user: a PATCH holds back only its own
members' changes)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks import ingest, procs, world
from benchmarks.procs import running
from benchmarks.scenarios import HOLD, _remove_members

CONNS = 32


def replicas(
    dbs: world.Databases, kind: str, workdir: Path, seconds: float, members: int
) -> dict[str, Any]:
    """Okta deliveries of one event at 32 connections: to one replica, then spread over three
    (a wrk per replica); then the three again while a fourth client sends Entra's 100-member
    removal PATCHes, one after another, to the third replica."""
    with (
        dbs.fresh(kind) as url,
        running(procs.standin(workdir, 0), "/sandbox/cor/calls") as cor,
        ExitStack() as stack,
    ):
        group_id, user_ids = world.seed_scim_group(url, members)
        bridges = []
        for _ in range(3):
            bridge = procs.bridge(
                workdir, url, cor.url + "/sandbox/cor", bridge_delivery_delay_seconds=HOLD
            )
            bridges.append(stack.enter_context(running(bridge, "/healthz")))
        one = ingest.run_wrk(bridges[0].url, 1, CONNS, seconds)
        three = _spread(bridges, seconds)
        stop = threading.Event()
        took: list[float] = []

        def scim() -> None:
            for start in range(0, len(user_ids), 100):
                if stop.is_set():
                    return
                batch = user_ids[start : start + 100]
                took.extend(_remove_members(bridges[2].url, group_id, batch, 100))

        with ThreadPoolExecutor(1) as pool:
            patches = pool.submit(scim)
            time.sleep(0.5)
            mixed = _spread(bridges[:2], seconds)
            stop.set()
            patches.result()
        acked, missing = ingest.missing_events(url, [one, *three, *mixed])
    return {
        "one": one.events_per_s, "one_p99": one.p99_ms,
        "three": sum(r.events_per_s for r in three), "three_p99": max(r.p99_ms for r in three),
        "mixed_p99": max(r.p99_ms for r in mixed), "mixed_max": max(r.max_ms for r in mixed),
        "mixed_rate": sum(r.events_per_s for r in mixed), "patches": len(took),
        "patch_max_ms": max(took, default=0.0) * 1000, "acked": acked, "missing": missing,
    }  # fmt: skip


def _spread(bridges: list[procs.Proc], seconds: float) -> list[ingest.WrkResult]:
    """wrk against each bridge at once, CONNS connections in all."""
    each = max(1, CONNS // len(bridges))
    with ThreadPoolExecutor(len(bridges)) as pool:
        runs = [pool.submit(ingest.run_wrk, b.url, 1, each, seconds) for b in bridges]
        return [r.result() for r in runs]
