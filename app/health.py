"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.graph.service import graph_checks
from app.runtime import Bridge, BridgeDep
from app.store import jobs as job_store

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, bridge: BridgeDep) -> JSONResponse:
    """Database reachable, mapping loaded, worker alive; and which sources are on."""
    checks: dict[str, Any] = {}
    ready = True
    try:
        stats = await anyio.to_thread.run_sync(_queue_stats, bridge)
        checks["database"] = {"ok": True, "dialect": bridge.db.dialect}
        checks["queue"] = _jsonable(stats)
    except Exception as exc:  # any driver error means "not ready"
        ready = False
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    mapping = bridge.mapping
    # A failed reload keeps the last good table: still ready, but it says so.
    checks["mapping"] = {
        "ok": True,
        "file": mapping.path,
        "groups": len(mapping.rules),
        "last_reload_error": bridge.tables.error,
    }
    worker = bridge.worker
    beat = worker.last_beat if worker else None
    # A round can take a while when COR is slow; a minute without a beat means it is stuck.
    worker_ok = (
        beat is not None and time.monotonic() - beat < 60 + bridge.settings.cor_timeout_seconds
    )
    # Shown, not gating: a round can be slow while COR times out, and refusing traffic then
    # would make Okta drop deliveries the bridge could still store.
    checks["worker"] = {"ok": worker_ok}
    checks["sources"] = bridge.settings.sources_on()
    checks["graph"] = await graph_checks(getattr(request.app.state, "graph", None))
    okta = getattr(request.app.state, "okta", None)
    if okta is not None:
        checks["okta_directory"] = await okta.checks()
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus(request: Request, bridge: BridgeDep) -> Response:
    """Prometheus exposition, with the outbox and directory gauges read fresh."""
    okta = getattr(request.app.state, "okta", None)
    if okta is not None:
        with contextlib.suppress(Exception):  # the counters still go out
            await okta.checks()
    # The Graph delta gauge is read fresh the same way (graph_checks never raises).
    await graph_checks(getattr(request.app.state, "graph", None))
    try:
        stats = await anyio.to_thread.run_sync(_queue_stats, bridge)
    except Exception:  # still expose the counters when the database is away
        stats = None
    if stats is not None:
        for state, n in stats["jobs"].items():
            metrics.JOBS.labels(state).set(n)
        oldest = stats["oldest_open"]
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        metrics.OLDEST_OPEN.set(age)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _queue_stats(bridge: Bridge) -> dict[str, Any]:
    with bridge.db.read() as conn:
        return job_store.queue_stats(conn)


def _jsonable(stats: dict[str, Any]) -> dict[str, Any]:
    oldest = stats["oldest_open"]
    return {**stats, "oldest_open": oldest.isoformat() if oldest else None}
