"""The admin page: server-rendered HTML for operators (login, dashboard, history, replay).

pages.py: the dashboard, login, history, jobs and their replay; letters.py: the dead letters
outside the outbox; views.py: viewer, rendering, transactions and checked forms for both.
"""

from fastapi import APIRouter

from app.ui import letters, pages

router = APIRouter()
router.include_router(pages.router)
router.include_router(letters.router)

__all__ = ["router"]
