"""Microsoft Graph: the client, notification parsing, the inbox resolver and subscriptions.

notifications.py  Graph's change and lifecycle notifications: parse, authenticate, key
client.py         the only code that speaks HTTP to Graph (token, subscriptions, lookups)
directory.py      cached group and user lookups on top of the client
resolver.py       inbox rows -> MembershipChanges (lookups, then intake in one transaction)
subscriptions.py  create, renew and reauthorize subscriptions; the renewal loop
service.py        what the running bridge starts for Graph, and its readiness
config.py         what the mapping asks of Graph, and what works without credentials
"""
