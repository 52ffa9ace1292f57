"""The application: routers, error answers, and the lifespan (database, HTTP client, worker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from app import __version__, health, metrics, ui
from app.delivery.cor import ClientCredentials, CorClient
from app.delivery.worker import Worker
from app.drain.retry import RetryPolicy
from app.errors import ConfigError, InputError
from app.graph import webhook
from app.graph.service import GraphService
from app.http import StaticToken, Tokens
from app.http.transport import cor_transport as lean_transport
from app.logs import RequestContext
from app.mapping_reload import MappingHolder, load_checked_mapping
from app.okta.service import OktaDirectory
from app.runtime import Bridge
from app.settings import Settings
from app.sources import admin, okta, scim
from app.sources.common import BodyLimit
from app.store import Database

log = structlog.get_logger(__name__)


def token_source(settings: Settings, http: httpx.AsyncClient) -> Tokens:
    """A static token, or OAuth2 client credentials; ConfigError when neither is set."""
    if settings.cor_access_token is not None:
        return StaticToken(settings.cor_access_token.get_secret_value())
    if settings.cor_client_id and settings.cor_client_secret is not None:
        return ClientCredentials(
            http,
            settings.cor_token_url,
            settings.cor_client_id,
            settings.cor_client_secret.get_secret_value(),
            on_fetch=lambda outcome: metrics.TOKEN_FETCHES.labels(outcome).inc(),
        )
    raise ConfigError(
        "no COR credentials: set COR_CLIENT_ID and COR_CLIENT_SECRET, or COR_ACCESS_TOKEN "
        "(or run with --sandbox)"
    )


def create_app(
    settings: Settings,
    *,
    sandbox: bool = False,
    cor_transport: httpx.AsyncBaseTransport | None = None,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    okta_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The bridge as an ASGI app; nothing is opened until the lifespan starts.

    The transports replace real HTTP to COR, Graph and Okta (tests: httpx.MockTransport).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mapping = load_checked_mapping(settings)
        db = Database(settings.bridge_database_url)
        schema = await asyncio.to_thread(db.migrate)
        if settings.scim_token is not None:
            # Loading the SCIM schemas takes ~0.1 s: at start, not in the first IdP request.
            await asyncio.to_thread(scim.scim_service)
        timeout = httpx.Timeout(settings.cor_timeout_seconds, connect=5.0)
        # httpx's default transport's CPU per call bounded the drain (app/http/transport.py).
        transport = cor_transport or lean_transport(settings.cor_api_url)
        async with httpx.AsyncClient(timeout=timeout, transport=transport) as http:
            bridge = Bridge(settings, db, MappingHolder(settings, mapping))
            tokens = token_source(settings, http)
            cor = CorClient(http, settings.cor_api_url, tokens, transport=transport)
            bridge.worker = _worker(settings, db, cor)
            app.state.bridge = bridge
            app.state.graph = GraphService(settings, bridge, transport=graph_transport)
            await app.state.graph.start()
            app.state.okta = OktaDirectory(settings, bridge, transport=okta_transport)
            await app.state.okta.start()
            task = asyncio.create_task(bridge.worker.run(), name="cor-bridge-worker")
            watcher = asyncio.create_task(
                bridge.tables.watch(settings.bridge_mapping_poll_seconds), name="cor-bridge-mapping"
            )
            log.info(
                "bridge_started",
                version=__version__,
                database=db.dialect,
                schema=schema,
                mapping=mapping.path,
                groups=len(mapping.rules),
                sources=settings.sources_on(),
            )
            try:
                yield
            finally:
                await app.state.graph.stop()
                await app.state.okta.stop()
                for background in (task, watcher):
                    background.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await background
                db.dispose()
                log.info("bridge_stopped")

    app = FastAPI(
        title="cor-bridge",
        version=__version__,
        description="Removes people from COR workspaces when they leave an IdP group.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks up the global providers on every request (7.6%
        # of the event loop's time at one-event Okta deliveries); the bridge reports through
        # Prometheus (/metrics) and its JSON logs, and ships no OpenTelemetry SDK to configure.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(BodyLimit, prefix="/admin", limit=settings.bridge_max_body_bytes)
    app.add_middleware(RequestContext)
    app.include_router(health.router)
    app.router.routes.extend(okta.routes)
    app.include_router(webhook.router)
    app.include_router(admin.router)
    app.include_router(ui.router)
    app.include_router(scim.router)
    if sandbox:
        from app.graph.standin import StandinState, create_standin, seed
        from app.okta.standin import create_okta_standin, seeded
        from app.sandbox import create_sandbox

        app.mount("/sandbox/cor", create_sandbox())
        app.mount("/sandbox/okta", create_okta_standin(seeded()))
        app.mount("/sandbox/graph", create_standin(seed(StandinState())))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field and the problem; never echo the input back (it may not even encode).
        errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        log.info("request_refused", path=request.url.path, status=exc.status, reason=exc.message)
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    return app


def _worker(settings: Settings, db: Database, cor: CorClient) -> Worker:
    return Worker(
        db,
        cor,
        RetryPolicy.from_settings(settings),
        concurrency=settings.bridge_worker_concurrency,
        batch=settings.bridge_worker_batch,
        poll_seconds=settings.bridge_poll_seconds,
        lease=timedelta(seconds=settings.bridge_lease_seconds),
        # SQLite serves one process, so anything left running was ours before a crash.
        release_on_start=db.dialect == "sqlite",
    )


def with_sandbox(settings: Settings, base_url: str) -> Settings:
    """Settings whose COR client talks to the sandbox at `base_url` (…/sandbox/cor), whose
    Okta directory is the stand-in beside it (unless OKTA_ORG_URL says otherwise), and whose
    Graph is the stand-in at …/sandbox/graph (unless GRAPH_TENANT_ID says otherwise)."""
    from app.graph.standin import CLIENT_ID, CLIENT_SECRET, TENANT
    from app.okta.standin import STANDIN_TOKEN
    from app.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

    base_url = base_url.rstrip("/")
    update: dict[str, object] = {
        "cor_api_url": base_url,
        "cor_token_url": f"{base_url}/v1/oauth/token",
        "cor_client_id": SANDBOX_CLIENT_ID,
        "cor_client_secret": SecretStr(SANDBOX_CLIENT_SECRET),
        "cor_access_token": None,
    }
    if settings.okta_org_url is None:
        update["okta_org_url"] = base_url.removesuffix("/cor") + "/okta"
        update["okta_api_token"] = SecretStr(STANDIN_TOKEN)
    if settings.graph_tenant_id is None:
        graph = base_url.removesuffix("/cor") + "/graph"
        update |= {
            "graph_login_url": graph,
            "graph_api_url": f"{graph}/v1.0",
            "graph_tenant_id": TENANT,
            "graph_client_id": CLIENT_ID,
            "graph_client_secret": SecretStr(CLIENT_SECRET),
        }
    return settings.model_copy(update=update)
