"""A Microsoft Graph stand-in for tests, served over real HTTP on loopback.

Paths (the bridge's GRAPH_LOGIN_URL is the server's URL, GRAPH_API_URL that plus /v1.0):
    POST /{tenant}/oauth2/v2.0/token                 client credentials -> bearer token
    POST /v1.0/subscriptions                         create (after validating both URLs)
    GET  /v1.0/subscriptions                         list (paged)
    PATCH /v1.0/subscriptions/{id}                   renew
    POST /v1.0/subscriptions/{id}/reauthorize        reauthorize
    GET  /v1.0/groups/{id}, GET /v1.0/groups?$filter=displayName eq '...'
    GET  /v1.0/users/{id}, GET /v1.0/users/{id}/transitiveMemberOf (paged, with a role in it)
    GET  /v1.0/groups/delta?$filter=id eq '..' or ...&$select=displayName,members
         a first round lists every member (one group's members split over pages by
         `delta_page_size`, each page a nextLink), then a deltaLink whose token returns only
         what changed since: members joined, members `@removed`, deleted groups `@removed`

Knobs are plain methods on `StandinState` (the server runs in a thread of the test process):
users, groups and memberships, queued faults, revoked tokens, and every call recorded.
`invoke_cli` runs `cor-bridge graph ...` in process against it.
"""

from app.graph.standin.routes import create_standin
from tests.graph_standin.server import StandinServer, invoke_cli, serve_standin
from app.graph.standin.state import CLIENT_ID, CLIENT_SECRET, TENANT, Fault, StandinState

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "TENANT",
    "Fault",
    "StandinServer",
    "StandinState",
    "create_standin",
    "invoke_cli",
    "serve_standin",
]
