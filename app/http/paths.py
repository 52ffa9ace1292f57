"""Identifiers in URLs: each exactly one path segment, and links that stay on their API."""

from __future__ import annotations

from urllib.parse import quote, unquote

from app.errors import PermanentError

DOT_SEGMENTS = frozenset({"", ".", ".."})


class UnsafeIdentifierError(PermanentError):
    """An identifier that would not survive as exactly one URL path segment."""


def unsafe_segment_reason(value: str) -> str | None:
    """Why `value` cannot be a path segment, or None when it can."""
    if value in DOT_SEGMENTS:
        # Quoting leaves dots alone and URL normalisation removes dot segments: ".." would
        # move the call to another route, with the bridge's credentials.
        return f"{value!r} is not a usable identifier in a URL path (empty or a dot segment)"
    return None


def segment(value: str) -> str:
    """`value` quoted as exactly one path segment; UnsafeIdentifierError for "", ".", ".."."""
    reason = unsafe_segment_reason(value)
    if reason is not None:
        raise UnsafeIdentifierError(reason)
    return quote(value, safe="")


def api_url(base: str, *parts: str) -> str:
    """`base` followed by each part as one path segment (see `segment`)."""
    return base.rstrip("/") + "".join("/" + segment(p) for p in parts)


def same_origin(base: str, url: str) -> bool:
    """Whether `url` is under `base` (a paging link must never take the token elsewhere)."""
    prefix = base.rstrip("/") + "/"
    if not url.startswith(prefix):
        return False
    # A dot segment, plain or percent-encoded, would climb out of `base` on the same host.
    path = url[len(prefix) :].split("?", 1)[0].split("#", 1)[0]
    return not any(unquote(part) in (".", "..") for part in path.split("/"))
