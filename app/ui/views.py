"""What every admin page route needs: who is looking (Viewer), rendering with the flash
message, reads and writes in a worker thread, and a form checked for its session and CSRF."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import structlog
from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from pydantic import SecretStr

from app.runtime import Bridge
from app.ui import auth
from app.ui.render import page

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Viewer:
    """A logged-in browser: what its pages need to render forms."""

    token: SecretStr
    session: str

    @property
    def csrf(self) -> str:
        """The CSRF token its forms carry."""
        return auth.csrf_token(self.token, self.session)


async def viewer_of(request: Request, bridge: Bridge) -> Viewer | None:
    """The logged-in viewer, or None."""
    token = auth.admin_token(bridge)
    session = await auth.current_session(request, bridge, token)
    return None if session is None else Viewer(token, session)


def to_login(request: Request) -> RedirectResponse:
    """Off to the login form, and back here after it."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/admin?" + urlencode({"next": target}), status_code=303)


def show(request: Request, token: SecretStr, name: str, status: int = 200, **ctx: Any) -> Response:
    """Render a page with the flash message waiting for it (shown once)."""
    flash = auth.read_flash(request, token)
    response = page(name, status, flash=flash, now=datetime.now(UTC), **ctx)
    auth.clear_flash(response, request)
    return response


def render(request: Request, viewer: Viewer, name: str, status: int = 200, **ctx: Any) -> Response:
    """Render a page for a logged-in viewer."""
    return show(request, viewer.token, name, status, viewer=viewer, **ctx)


async def read(bridge: Bridge, work: Callable[..., T], *args: Any) -> T:
    """Run `work(conn, *args)` in a read transaction: pages that only read are never in
    the IdPs' way."""
    return await bridge.db.run(work, *args, write=False)


async def write(bridge: Bridge, work: Callable[..., T], *args: Any) -> T:
    """Run `work(conn, *args)` in a write transaction (a read one upgraded to a write fails
    at once on SQLite, "database is locked", when another writer got there first)."""
    return await bridge.db.run(work, *args)


async def posted_form(
    request: Request, bridge: Bridge
) -> tuple[Viewer, dict[str, list[str]]] | Response:
    """A POSTed form of a logged-in viewer whose CSRF token matches; else the error page
    (401 without a session, 403 for a stale or foreign form)."""
    token = auth.admin_token(bridge)
    form = await auth.read_form(request)
    session = await auth.current_session(request, bridge, token)
    if session is None:
        return show(request, token, "error.html", 401, viewer=None, message="Log in again.")
    viewer = Viewer(token, session)
    if not auth.csrf_matches(token, session, auth.first(form, "csrf")):
        log.warning("admin_ui_csrf_refused", path=request.url.path)
        message = "This form is stale or did not come from this page; reload and try again."
        return render(request, viewer, "error.html", 403, message=message)
    return viewer, form


def back_with(
    request: Request, viewer: Viewer, form: dict[str, list[str]], lines: list[str]
) -> Response:
    """Redirect (303) to where the form came from, with `lines` as the flash message."""
    response = RedirectResponse(auth.safe_back(auth.first(form, "back")), status_code=303)
    auth.set_flash(response, request, viewer.token, lines)
    return response
