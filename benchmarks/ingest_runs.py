"""Ingest scenarios: the bridge beside the durable ceiling on the same engine, run for run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks import ingest, procs, world
from benchmarks.procs import running
from benchmarks.scenarios import HOLD, _count


def _settle(url: str, timeout: float = 120.0) -> None:
    """Wait until the bridge has worked off what the last run left queued (wrk stops with
    requests in flight, and the server still answers them), so each run starts quiet."""
    last, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _count(url, "SELECT count(*) FROM events")
        if now == last:
            return
        last = now
        time.sleep(1.0)


def ingest_bridge(
    dbs: world.Databases, kind: str, workdir: Path, sizes: list[int], conns: list[int],
    seconds: float, paced: list[tuple[int, float]],
) -> dict[str, Any]:  # fmt: skip
    """The open-loop runs, then the closed-loop sweep: for each (size, connections) the durable
    ceiling on its own fresh database, then the bridge, one after the other."""
    with (
        dbs.fresh(kind) as url,
        dbs.fresh(kind) as durable_url,
        running(procs.standin(workdir, 0), "/sandbox/cor/calls") as cor,
        running(procs.ceiling(workdir, durable_url), "/healthz") as durable,
    ):
        bridge = procs.bridge(
            workdir, url, cor.url + "/sandbox/cor", bridge_delivery_delay_seconds=HOLD
        )
        with running(bridge, "/healthz"):
            steady = []
            for n, rate in paced:
                _settle(url)
                steady.append(ingest.run_paced(bridge.url, n, rate, seconds))
            sweep, ceiling = [], []
            for n in sizes:
                for c in conns:
                    ceiling.append(ingest.run_wrk(durable.url, n, c, seconds, durable.pid))
                    _settle(url)
                    sweep.append(ingest.run_wrk(bridge.url, n, c, seconds, bridge.pid))
        acked, missing = ingest.missing_events(url, [*sweep, *steady])
    return {"sweep": sweep, "durable": ceiling, "paced": steady, "acked": acked,
            "missing": missing}  # fmt: skip


def ceiling_sweep(workdir: Path, size: dict[str, Any]) -> list[ingest.WrkResult]:
    """The bare ceiling: stores nothing."""
    with running(procs.ceiling(workdir), "/healthz") as bare:
        return [
            ingest.run_wrk(bare.url, n, c, size["seconds"])
            for n in size["sizes"]
            for c in size["conns"]
        ]
