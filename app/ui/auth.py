"""Browser sessions for the admin page: a session cookie, CSRF tokens and flash messages.

Each login draws a random secret; the database keeps only its SHA-256 (app/store/sessions.py)
until logout deletes it or SESSION_SECONDS pass. The cookie also carries an HMAC made with
BRIDGE_ADMIN_TOKEN, so changing the token ends every session. It never holds the token:

    session = "<random secret>.<HMAC(token, 'session|<secret>')>"      (a row while it lasts)
    csrf    = HMAC(token, 'csrf|' + session)                          (hidden field in forms)
    flash   = "<base64url JSON list>.<HMAC(token, 'flash|' + payload)>" (one redirect long)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from urllib.parse import parse_qs

from fastapi import HTTPException, Request, Response
from pydantic import SecretStr
from sqlalchemy import Connection

from app.runtime import Bridge
from app.sources.common import read_body
from app.store import sessions as session_store

T = TypeVar("T")

SESSION_COOKIE = "cor_bridge_admin"
FLASH_COOKIE = "cor_bridge_flash"
COOKIE_PATH = "/admin"
SESSION_SECONDS = 12 * 3600
FORM_LIMIT = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
# Where a form may send the browser back to: a path of this app's admin pages, nothing else.
_SAFE_BACK = re.compile(r"/admin(/ui/[A-Za-z0-9_./-]*)?(\?[A-Za-z0-9_.=&%@+-]*)?(#[a-z-]+)?")


def admin_token(bridge: Bridge) -> SecretStr:
    """The admin token; 404 when it is unset, exactly like the JSON API."""
    token = bridge.settings.bridge_admin_token
    if token is None or not token.get_secret_value():
        raise HTTPException(404, "admin API is not enabled (BRIDGE_ADMIN_TOKEN is unset)")
    return token


def _mac(token: SecretStr, label: str) -> str:
    key = token.get_secret_value().encode()
    return hmac.new(key, label.encode(), hashlib.sha256).hexdigest()


def new_session(token: SecretStr) -> str:
    """A fresh session value for the cookie: a random secret and its MAC under `token`."""
    secret = secrets.token_urlsafe(32)
    return f"{secret}.{_mac(token, f'session|{secret}')}"


def session_key(token: SecretStr, value: str | None) -> str | None:
    """The key a session value is stored under, or None when it is not signed by `token`."""
    if not value:
        return None
    secret, _, mac = value.partition(".")
    if not _SECRET.fullmatch(secret):
        return None
    if not hmac.compare_digest(mac.encode(), _mac(token, f"session|{secret}").encode()):
        return None
    return hashlib.sha256(secret.encode()).hexdigest()


async def _store(bridge: Bridge, work: Callable[[Connection], T], *, write: bool) -> T:
    return await bridge.db.run(work, write=write)


async def start_session(bridge: Bridge, token: SecretStr) -> str:
    """Record a new session (valid SESSION_SECONDS) and return its cookie value."""
    value = new_session(token)
    key = session_key(token, value)
    assert key is not None
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=SESSION_SECONDS)
    await _store(bridge, lambda c: session_store.start_session(c, key, now, expires), write=True)
    return value


async def current_session(request: Request, bridge: Bridge, token: SecretStr) -> str | None:
    """The request's session value while it is signed, recorded and unexpired; else None."""
    value = request.cookies.get(SESSION_COOKIE)
    key = session_key(token, value)
    if key is None:
        return None
    now = datetime.now(UTC)
    alive = await _store(bridge, lambda c: session_store.session_active(c, key, now), write=False)
    return value if alive else None


async def end_session(request: Request, bridge: Bridge, token: SecretStr) -> None:
    """Delete the request's session, so its cookie opens nothing any more."""
    key = session_key(token, request.cookies.get(SESSION_COOKIE))
    if key is not None:
        await _store(bridge, lambda c: session_store.end_session(c, key), write=True)


def csrf_token(token: SecretStr, session: str) -> str:
    """The CSRF token that forms of this session carry."""
    return _mac(token, f"csrf|{session}")


def csrf_matches(token: SecretStr, session: str, presented: str | None) -> bool:
    """Check a form's CSRF token in constant time."""
    return presented is not None and hmac.compare_digest(
        presented.encode(), csrf_token(token, session).encode()
    )


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def set_session(response: Response, request: Request, session: str) -> None:
    """Give the browser its session cookie (HttpOnly, SameSite=Strict, Secure on https)."""
    _cookie(response, request, SESSION_COOKIE, session, SESSION_SECONDS)


def clear_session(response: Response, request: Request) -> None:
    """Forget the session cookie."""
    _cookie(response, request, SESSION_COOKIE, "", 0)


def set_flash(response: Response, request: Request, token: SecretStr, lines: list[str]) -> None:
    """Messages to show once, on the page the browser is redirected to."""
    payload = base64.urlsafe_b64encode(json.dumps(lines).encode()).decode().rstrip("=")
    _cookie(response, request, FLASH_COOKIE, f"{payload}.{_mac(token, f'flash|{payload}')}", 60)


def read_flash(request: Request, token: SecretStr) -> list[str]:
    """The flash messages this request carries (signed by this token), or none."""
    value = request.cookies.get(FLASH_COOKIE)
    if not value:
        return []
    payload, _, mac = value.partition(".")
    if not hmac.compare_digest(mac, _mac(token, f"flash|{payload}")):
        return []
    try:
        lines = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return []
    return [str(line) for line in lines] if isinstance(lines, list) else []


def clear_flash(response: Response, request: Request) -> None:
    """Forget the flash messages once shown."""
    if FLASH_COOKIE in request.cookies:
        _cookie(response, request, FLASH_COOKIE, "", 0)


async def read_form(request: Request) -> dict[str, list[str]]:
    """A URL-encoded form body (415 for anything else, 413 when over FORM_LIMIT)."""
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != FORM_TYPE:
        raise HTTPException(415, f"expected a form ({FORM_TYPE})")
    body = await read_body(request, FORM_LIMIT)
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=2000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "the form could not be read") from exc


def first(form: dict[str, list[str]], name: str) -> str | None:
    """The first value of a form field, or None."""
    values = form.get(name)
    return values[0] if values else None


def safe_back(value: str | None, default: str = "/admin") -> str:
    """A redirect target from a form: an admin page path, else `default` (no open redirect)."""
    if value and _SAFE_BACK.fullmatch(value):
        return value
    return default
