"""The admin page's dead letters outside the outbox: Graph inbox entries and held Okta
changes that could not be looked up, and removals with no COR user id (app/dead_letters.py).
Listed on the dashboard; each has a Replay button that posts here."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from app import dead_letters
from app.dead_letters import LetterReplay
from app.operations import INT32_MAX
from app.runtime import BridgeDep
from app.ui import auth
from app.ui.render import HtmlErrorsRoute
from app.ui.views import back_with, posted_form, render

log = structlog.get_logger(__name__)
# What each kind is called on the page, as a flash line begins.
KINDS = {
    "inbox": "Graph inbox entry",
    "held": "Held Okta change",
    "unresolved": "Unresolved removal",
}


def _enabled(bridge: BridgeDep) -> None:
    auth.admin_token(bridge)  # 404 before anything else when the admin API is off


router = APIRouter(
    include_in_schema=False, route_class=HtmlErrorsRoute, dependencies=[Depends(_enabled)]
)


@router.post("/admin/ui/dead-letters/replay")
async def replay(request: Request, bridge: BridgeDep) -> Response:
    """Send the dead letters a form names (`kind`, `id`...) again, CSRF-checked, and go back."""
    checked = await posted_form(request, bridge)
    if isinstance(checked, Response):
        return checked
    viewer, form = checked
    kind = auth.first(form, "kind") or ""
    if kind not in KINDS:
        message = f"kind must be one of {', '.join(KINDS)}"
        return render(request, viewer, "error.html", 400, message=message)
    try:
        ask = LetterReplay.model_validate({kind: [int(v) for v in form.get("id", [])]})
    except (ValueError, ValidationError):
        message = f"ids must be whole numbers from 1 to {INT32_MAX}, at most 1000"
        return render(request, viewer, "error.html", 400, message=message)
    ids: list[int] = getattr(ask, kind)
    if not ids:
        return back_with(request, viewer, form, ["Nothing to replay: no dead letter was selected."])
    result = await dead_letters.send_again(bridge, ask)
    log.info("admin_ui_letters_replay", kind=kind, result=result)
    return back_with(request, viewer, form, _lines(kind, result))


def _lines(kind: str, result: dict[str, Any]) -> list[str]:
    name = KINDS[kind]
    done = [f"{name} {i}: sent again." for i in result["replayed"][kind]]
    gone = [f"{name} {i}: not a dead letter any more." for i in result["not_dead"].get(kind, [])]
    return done + gone
