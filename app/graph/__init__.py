"""Microsoft Graph (Entra ID groups), all of it but the SQL (that is app/store/graph.py).

A notification's path: webhook -> triage -> the Graph inbox (a table) -> resolver -> intake.
Delta reads what notifications missed and puts it on the same path.

webhook.py        the HTTP routes /hooks/graph and /hooks/graph/lifecycle: handshake, auth, 202
notifications.py  Graph's change and lifecycle notifications: parse, authenticate, key
triage.py         a delivery's notifications -> inbox rows, recorded-only events, lifecycle marks
resolver.py       inbox rows -> MembershipChanges (lookups, then intake in one transaction)
backoff.py        when a failed lookup is tried again
origins.py        where an inbox entry came from when not from a notification (delta, ...)
client.py         the only code that speaks HTTP to Graph (token, subscriptions, lookups)
directory.py      cached group and user lookups on top of the client
delta.py          the delta catch-up poller; delta_pages.py reads a page, delta_status.py reports
subscriptions.py  create, renew and reauthorize subscriptions; the renewal loop
service.py        what the running bridge starts for Graph, and its readiness
config.py         what the mapping asks of Graph, and what works without credentials
"""
