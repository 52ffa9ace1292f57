"""The ceiling: a bare FastAPI endpoint that checks the secret, parses the same JSON and stores
nothing, served by uvicorn with the settings `cor-bridge serve` uses."""

from __future__ import annotations

import hmac
import json
import os
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request

app = FastAPI()
SECRET = os.environ.get("OKTA_HOOK_SECRET", "").encode()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/hooks/okta")
async def receive(request: Request) -> dict[str, Any]:
    presented = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(presented, SECRET):
        raise HTTPException(401, "wrong secret")
    body = json.loads(await request.body())
    return {"received": len(body["data"]["events"]), "eventId": body.get("eventId")}


if __name__ == "__main__":
    port = int(sys.argv[1])
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
