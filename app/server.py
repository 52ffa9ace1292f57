"""How `cor-bridge serve` runs the app under uvicorn: proxy headers, keep-alive, connections.

uvicorn believes X-Forwarded-For and X-Forwarded-Proto from 127.0.0.1 unless told otherwise,
so anything on the bridge's own host could pose as any client address (a fresh failed-auth
bucket per request) or as https. The bridge believes them only from BRIDGE_TRUSTED_PROXIES,
and from nobody when that is empty. Behind a trusted proxy, `request.client` is the caller the
proxy saw and `request.url.scheme` the scheme the browser used (the session cookie's `Secure`).
"""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp

from app.settings import Settings


def server_config(app: ASGIApp, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration `cor-bridge serve` runs `app` with."""
    trusted = settings.trusted_proxies()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
        timeout_keep_alive=settings.bridge_keep_alive_seconds,
        limit_concurrency=settings.bridge_max_connections or None,
        # uvloop and httptools: the same asyncio and HTTP/1.1, in C (docs/performance.md,
        # "Ingest, session 7"). Named, not left to uvicorn's "auto" (whatever is installed).
        loop="uvloop",
        http="httptools",
    )


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Ask glibc for at most `arenas` malloc arenas, before any thread starts.

    glibc gives each thread that allocates its own arena (up to 8 a core), and the bridge's
    database work runs in a pool of threads: freed memory stays spread over those arenas. With
    SQLite (whose page cache and sorter allocate in those threads) peak RSS at 100,000 pending
    went 124 -> 107 MB with two arenas. Elsewhere (musl, macOS) this does nothing.
    """
    import ctypes
    import ctypes.util
    import os

    if "MALLOC_ARENA_MAX" in os.environ:  # the operator's choice stands
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc and libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
