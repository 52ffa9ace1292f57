"""The one HTTP seam every outside API goes through: COR, Microsoft Graph and Okta.

Each client keeps only its endpoints; what they share lives here (paths.py, tokens.py,
api.py, replies.py), all of it importable from `app.http`:

    segment / api_url   identifiers as exactly one path segment ("", ".", ".." refused)
    fetch_token         one OAuth2 token request: (access_token, expires_in) or our error
    CachedToken         a token fetched on demand, cached until shortly before it expires
    StaticToken         a fixed token (COR_ACCESS_TOKEN, OKTA_API_TOKEN)
    Api.send            one authorised request: network errors and non-2xx become our errors,
                        a 401 fetches a fresh token once
    error_from          a non-2xx reply as RetryableError / PermanentError / NotFoundError,
                        with the API's own code and message (never a secret)

Errors raised (see app/errors.py):
    RetryableError      429, 500, 502, 503, 504, timeouts, network errors (with the wait the
                        reply asked for: Retry-After, or Okta's X-Rate-Limit-Reset)
    PermanentError      any other non-2xx
     ├── NotFoundError  404: the object does not exist (any more)
     └── UnsafeIdentifierError  an identifier that cannot be one path segment; nothing sent
"""

from app.http.api import Api, AuthHeaders, ErrorFactory, bearer
from app.http.paths import (
    DOT_SEGMENTS,
    UnsafeIdentifierError,
    api_url,
    same_origin,
    segment,
    unsafe_segment_reason,
)
from app.http.replies import (
    RETRYABLE_STATUS,
    NotFoundError,
    error_body,
    error_from,
    json_object,
    parse_retry_after,
    seconds_until_reset,
    wait_asked,
)
from app.http.tokens import (
    DEFAULT_TOKEN_SECONDS,
    TOKEN_MARGIN_SECONDS,
    CachedToken,
    StaticToken,
    TokenFetch,
    Tokens,
    fetch_token,
)

__all__ = [
    "DEFAULT_TOKEN_SECONDS",
    "DOT_SEGMENTS",
    "RETRYABLE_STATUS",
    "TOKEN_MARGIN_SECONDS",
    "Api",
    "AuthHeaders",
    "CachedToken",
    "ErrorFactory",
    "NotFoundError",
    "StaticToken",
    "TokenFetch",
    "Tokens",
    "UnsafeIdentifierError",
    "api_url",
    "bearer",
    "error_body",
    "error_from",
    "fetch_token",
    "json_object",
    "parse_retry_after",
    "same_origin",
    "seconds_until_reset",
    "segment",
    "unsafe_segment_reason",
    "wait_asked",
]
