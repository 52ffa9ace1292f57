"""What every source needs: a capped body read, a constant-time secret check."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

import structlog
from fastapi import HTTPException, Request
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def parse_json(body: bytes, *, mend: bool = True) -> Any:
    """The body as JSON, or a 400 that says where it is broken. Lone surrogates become U+FFFD
    (`mend`), or are refused."""
    if not body.strip():
        raise InputError("request body is empty; expected JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("request body is not UTF-8 text") from exc
    try:
        value = json.loads(text)
        if _LONE_SURROGATE.search(text):
            if not mend:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            value = _mend(value)
    except RecursionError as exc:
        raise InputError("request body is JSON nested too deeply") from exc
    except UnicodeEncodeError as exc:
        raise InputError("request body has a string that is not valid Unicode") from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    return value


# JSON may escape surrogates ("\ud800"); a lone one is no character and no UTF-8 text can
# hold it later on. Refusing the body would lose an Okta batch (Okta does not retry a 4xx),
# so a lone surrogate becomes U+FFFD, as a UTF-8 decoder does with a broken sequence.
_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]", re.ASCII)


def _mend(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_mend(item) for item in value]
    if isinstance(value, dict):
        return {_mend(key): _mend(item) for key, item in value.items()}
    return value


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


class BodyLimit:
    """ASGI middleware: 413 for bodies over `limit` under `prefix`, before anything parses them.

    The sources read their bodies through `read_body`; routes whose bodies FastAPI parses
    (the admin API) get the same bound here, declared length or not.
    """

    def __init__(self, app: ASGIApp, *, prefix: str, limit: int) -> None:
        self.app = app
        self.prefix = prefix
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        # Read the (bounded) body first, then hand it on: an error raised while the app reads
        # would surface as its own 400, not our 413.
        chunks: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            chunks.append(message)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await self._refuse(send)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body is over the {self.limit}-byte limit"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


def check_batch_size(raw: Any, path: tuple[str, ...], limit: int, what: str) -> None:
    """413 naming the count when the list at `path` in `raw` holds more than `limit` items,
    before any of it is validated or stored."""
    found: Any = raw
    for key in path:
        found = found.get(key) if isinstance(found, dict) else None
    if isinstance(found, list) and len(found) > limit:
        raise InputError(
            f"{len(found)} {what} in one delivery; the limit is {limit} "
            "(BRIDGE_MAX_EVENTS_PER_DELIVERY): nothing was stored",
            status=413,
        )
