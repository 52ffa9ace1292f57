"""The admin page: server-rendered HTML for operators (login, dashboard, history, replay)."""

from app.ui.pages import router

__all__ = ["router"]
