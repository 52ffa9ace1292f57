"""Jinja2 templates (autoescaped) and the headers every admin page is sent with."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import cache
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

# No scripts, no framing, no third parties: the pages are plain HTML with one style block.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def when(value: datetime | None) -> str:
    """A timestamp as `YYYY-MM-DD HH:MM:SS` UTC (empty for None)."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(value: datetime | None) -> str:
    """A timestamp in full ISO 8601, as the JSON API shows it."""
    return "" if value is None else value.isoformat()


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, e.g. `3m 12s` or `2d 4h`."""
    if value is None:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - value).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def as_json(value: Any) -> str:
    """A value as compact JSON text (for lists such as `remaining`)."""
    return json.dumps(value, default=str, ensure_ascii=False)


@cache
def environment() -> Environment:
    """The template environment; autoescape on for every template."""
    env = Environment(
        loader=PackageLoader("app.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, iso=iso, age=age, as_json=as_json)
    return env


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a template into an HTML response with the security headers."""
    html = environment().get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def invalid_input_page(exc: RequestValidationError) -> HTMLResponse:
    """The 422 page for a path or query value the route refused (named, never echoed)."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e['loc'][1:]) or 'request'}: {e['msg']}"
        for e in exc.errors()
    )
    message = f"This address asks for something the bridge cannot look up ({problems})."
    return page("error.html", 422, flash=[], now=datetime.now(UTC), viewer=None, message=message)


class HtmlErrorsRoute(APIRoute):
    """A route of the admin page: a value FastAPI refuses gets an HTML page, not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, answering validation errors with `invalid_input_page`."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return invalid_input_page(exc)

        return handle
