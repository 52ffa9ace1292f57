"""Reading an API's replies: errors as ours (retry or not, with the API's code and message),
the wait a reply asks for, and JSON bodies."""

from __future__ import annotations

import math
from collections.abc import Container
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from app.errors import PermanentError, RetryableError

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class NotFoundError(PermanentError):
    """The API answered 404: the object is gone (or never existed)."""


def error_from(
    reply: httpx.Response,
    who: str,
    *,
    retry_credentials: bool = False,
    retry_status: Container[int] = RETRYABLE_STATUS,
) -> RetryableError | PermanentError:
    """A non-2xx reply as our error, with the API's code and message (never a secret).

    `retry_status`: the statuses worth trying again (COR adds 401; a token endpoint, every
    status). `retry_credentials`: a refused credential (401, 403) is the bridge's problem, not
    the work's: retried with backoff until an operator fixes it, never a dead letter.
    """
    code, message = error_body(reply)
    status = reply.status_code
    text = f"{who} answered {status}" + (f" {code}" if code else "")
    text += f": {message}" if message else ""
    if status in retry_status or (retry_credentials and status in (401, 403)):
        return RetryableError(text, status=status, code=code, retry_after=wait_asked(reply))
    if status == 404:
        return NotFoundError(text, status=status, code=code)
    return PermanentError(text, status=status, code=code)


def error_body(reply: httpx.Response) -> tuple[str | None, str | None]:
    """(code, message) from any of the error bodies the bridge meets.

    COR `{"code","message"}`, OAuth `{"error","error_description"}`, Graph
    `{"error": {"code","message"}}`, Okta `{"errorCode","errorSummary","errorCauses"}`.
    """
    try:
        body: Any = reply.json()
    except ValueError:
        return None, _short(reply.text, 200)  # an HTML error page says little past that
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        return _text(error.get("code")), _short(error.get("message"))
    code = body.get("code") or body.get("errorCode") or (error if isinstance(error, str) else None)
    message = body.get("message") or body.get("errorSummary") or body.get("error_description")
    causes = body.get("errorCauses")
    if isinstance(causes, list) and causes and isinstance(causes[0], dict):
        cause = causes[0].get("errorSummary")
        message = f"{message} ({cause})" if message and cause else message or cause
    return _text(code), _short(message)


def wait_asked(reply: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds the reply asks to wait: Retry-After, else Okta's X-Rate-Limit-Reset on a 429."""
    after = parse_retry_after(reply.headers.get("Retry-After"), now)
    if after is not None or reply.status_code != 429:
        return after
    return seconds_until_reset(reply.headers.get("X-Rate-Limit-Reset"), now)


def seconds_until_reset(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds until an epoch-seconds reset time (Okta's X-Rate-Limit-Reset)."""
    try:
        reset = float(value) if value else math.nan
    except ValueError:
        return None
    if not math.isfinite(reset):
        return None
    return max(reset - (now or datetime.now(UTC)).timestamp(), 0.0)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan" and "inf" parse as floats but are no delay; NaN would break the scheduler.
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def json_object(reply: httpx.Response, who: str) -> dict[str, Any]:
    """A reply's JSON object ({} for an empty reply); RetryableError when it is not one."""
    if reply.status_code == 204 or not reply.content:
        return {}
    try:
        body = reply.json()
    except ValueError as exc:
        raise RetryableError(f"{who} sent a reply that is not JSON ({reply.status_code})") from exc
    if not isinstance(body, dict):
        raise RetryableError(f"{who} sent a reply that is not a JSON object")
    return body


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None


def _short(value: Any, limit: int = 300) -> str | None:
    return str(value)[:limit] if value else None
