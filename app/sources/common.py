"""What every source needs: a capped body read, a constant-time secret check."""

from __future__ import annotations

import hmac
import json
from typing import Any

import structlog
from fastapi import HTTPException, Request
from pydantic import SecretStr

from app.errors import InputError
from app.guard import FailureLimiter

log = structlog.get_logger(__name__)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(f"request body is over the {limit}-byte limit", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(f"request body is over the {limit}-byte limit", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400 that says where it is broken."""
    if not body.strip():
        raise InputError("request body is empty; expected JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("request body is not UTF-8 text") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


def secret_matches(presented: str | None, expected: SecretStr) -> bool:
    """Compare a presented secret in constant time."""
    secret = expected.get_secret_value()
    if presented is None or not secret:
        return False
    return hmac.compare_digest(presented.encode(), secret.encode())


def refuse_auth(request: Request, failures: FailureLimiter, detail: str) -> HTTPException:
    """401 for a failed authentication; 429 with Retry-After once its address is over the limit."""
    client = request.client.host if request.client else None
    wait = failures.record(client)
    if wait is None:
        return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
    log.warning("auth_failures_over_limit", client=client, path=request.url.path)
    return HTTPException(
        429,
        "too many failed authentications from this address",
        headers={"Retry-After": f"{wait:.0f}"},
    )


def bearer_matches(authorization: str | None, expected: SecretStr) -> bool:
    """Check an `Authorization: Bearer <token>` header in constant time."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return secret_matches(token.strip(), expected)
