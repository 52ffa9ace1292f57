"""A local COR stand-in, for trying the bridge with no COR account and for tests.

Mount it with ``app.mount("/sandbox/cor", create_sandbox())``. Paths below are relative to
the mount point.

COR's own surface (DESIGN.md section 6):
    POST /v1/oauth/token?grant_type=client_credentials      Basic auth -> bearer token
    PUT  /v2/integrations/users/{user_id}/detach             remove workspaces (idempotent)
    PUT  /v2/integrations/users/{user_id}/attach             add workspaces

Anything else is answered 404 as COR would, and recorded: a test can see that no call ever
went elsewhere (each call keeps its `raw_path`, the path exactly as it arrived).

Knobs for tests and demos:
    GET|DELETE /calls          what the COR routes were asked and answered (?path_contains=)
    GET /users/{user_id}       one user (?source=, default OKTA); POST /users creates or replaces
                               one user, or a list of them (all or nothing)
    POST|DELETE /faults        queue or clear misbehaviour: a status, a Retry-After, a delay
    POST /tokens/revoke        every issued token stops working (to test the token refresh)
    POST /reset                seed users back; calls, faults and tokens gone

All state lives in the app that create_sandbox returns, so two sandboxes never share it.
"""

from app.sandbox.routes import create_sandbox
from app.sandbox.state import (
    DEFAULT_USERS,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    WORKSPACES,
    FaultSpec,
    SeedUser,
)

__all__ = [
    "DEFAULT_USERS",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "WORKSPACES",
    "FaultSpec",
    "SeedUser",
    "create_sandbox",
]
