"""The stand-in's replies: Graph's error body, and a list paged with @odata.nextLink."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def page(request: Request, items: list[dict[str, Any]], size: int) -> Response:
    start = int(request.query_params.get("$skiptoken", "0"))
    body: dict[str, Any] = {"value": items[start : start + size]}
    if start + size < len(items):
        query = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
        query["$skiptoken"] = str(start + size)
        body["@odata.nextLink"] = str(request.url.replace_query_params(**query))
    return JSONResponse(body)
