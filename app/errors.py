"""One exception tree for the bridge.

    BridgeError
     ├── ConfigError          settings or mapping file are wrong (file, line, reason)
     ├── InputError           a source sent something we refuse (becomes a 4xx)
     └── DeliveryError        COR did not do what we asked
          ├── RetryableError  429, 5xx, network, timeout: try again later
          └── PermanentError  any other answer: dead letter, with COR's code and message

Boundaries catch foreign exceptions and `raise ... from exc` one of these, so no
traceback and no secret ever reaches a client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """Settings or the mapping file are unusable."""

    def __init__(self, reason: str, *, file: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.file = file
        self.line = line
        where = file or ""
        if file and line:
            where = f"{file}:{line}"
        super().__init__(f"{where}: {reason}" if where else reason)


class InputError(BridgeError):
    """A caller sent input we refuse; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.message = message
        self.status = status
        super().__init__(message)


class DeliveryError(BridgeError):
    """A detach did not succeed."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.message = message
        self.status = status
        self.code = code
        super().__init__(message)


class RetryableError(DeliveryError):
    """Worth trying again: 429, 5xx, a timeout or a network error."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """Trying again will not help; the job goes to the dead letters."""


def describe_errors(exc: ValidationError, limit: int = 5) -> str:
    """Pydantic errors as short text, never echoing the input values."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
