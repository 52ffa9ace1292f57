"""The ceilings: bare FastAPI endpoints served by uvicorn with the settings `cor-bridge serve`
uses (app/server.py's `server_config` on the default settings: keep-alive 5 s, at most 1,000
connections, no access log; and its `tune_interpreter`).

- bare: checks the secret, parses the same JSON, stores nothing;
- durable (`python -m benchmarks.ceiling PORT DATABASE_URL`): the same, and one row per event
  written to SQLite (WAL, synchronous=FULL) or PostgreSQL (durable commits), with group
  commit (requests that arrive while a commit is on disk share the next one), answering 200
  only after the commit that holds its rows. Bridge ÷ durable ceiling is then the cost of the
  bridge's rules, not of durability.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sys
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, event, insert

from app.server import server_config
from app.settings import Settings

app = FastAPI()
SECRET = os.environ.get("OKTA_HOOK_SECRET", "").encode()
rows = Table("ceiling_events", MetaData(), Column("uuid", String(200), primary_key=True))


class Durable:
    """One row per event, group-committed: a flusher takes everything queued, one commit."""

    def __init__(self, url: str) -> None:
        self.engine = _engine(url)
        rows.metadata.create_all(self.engine)
        self.queue: list[tuple[list[str], asyncio.Future[None]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def store(self, uuids: list[str]) -> None:
        future = asyncio.get_running_loop().create_future()
        self.queue.append((uuids, future))
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue, []
                try:
                    await anyio.to_thread.run_sync(self._commit, [u for b, _ in batch for u in b])
                except Exception as exc:
                    for _, future in batch:
                        future.set_exception(exc)
                    continue
                for _, future in batch:
                    future.set_result(None)
        finally:
            self.flusher = None

    def _commit(self, uuids: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(rows), [{"uuid": u} for u in uuids])


def _engine(url: str) -> Engine:
    if url.startswith("postgresql"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        return create_engine(url, pool_size=10, max_overflow=10)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # as the bridge: on disk before the 200
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


store: Durable | None = None


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/hooks/okta")
async def receive(request: Request) -> dict[str, Any]:
    presented = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(presented, SECRET):
        raise HTTPException(401, "wrong secret")
    body = json.loads(await request.body())
    events = body["data"]["events"]
    if store is not None:
        await store.store([e["uuid"] for e in events])
    return {"received": len(events), "eventId": body.get("eventId")}


if __name__ == "__main__":
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        store = Durable(sys.argv[2])
    uvicorn.Server(server_config(app, Settings(_env_file=None), "127.0.0.1", port)).run()
