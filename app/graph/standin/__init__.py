"""A Microsoft Graph stand-in served over real HTTP: the tests' Graph, and `make run`'s.

Paths (the bridge's GRAPH_LOGIN_URL is where it is served, GRAPH_API_URL that plus /v1.0):
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
         what changed since: members joined, members `@removed`, deleted groups `@removed`;
         an expired token answers 400 syncStateNotFound, as Graph does for groups
    /_standin/...                                    the operator's knobs (tenant.py)

Tests turn the same knobs as methods of `StandinState`: users, groups and memberships,
queued faults, revoked tokens, expired delta tokens, and every call recorded.
"""

from app.graph.standin.routes import create_standin
from app.graph.standin.state import CLIENT_ID, CLIENT_SECRET, TENANT, Fault, StandinState
from app.graph.standin.tenant import seed

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "TENANT",
    "Fault",
    "StandinState",
    "create_standin",
    "seed",
]
