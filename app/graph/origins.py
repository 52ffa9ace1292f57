"""Where a Graph inbox entry came from, when not from a subscription's notification.

Such entries carry one of these names in the inbox's `subscription_id` column; the resolver
puts the reason they stand for first in the user's history.
"""

from __future__ import annotations

DELTA = "graph-delta"  # a later round of the delta query: a join or a leave since the last
BASELINE = "graph-delta-baseline"  # a group's first round: who is in it now
GROUP_DELETED = "graph-group-deleted"  # a deleted group: each member the bridge knew in it
RESYNC = "graph-delta-resync"  # the delta token expired: a whole listing no longer shows them
ORIGINS = frozenset({DELTA, BASELINE, GROUP_DELETED, RESYNC})


def origin_note(origin: str, group_id: str, removed: bool) -> str | None:
    """The reason an entry of this origin stands for (None: a notification's own entry)."""
    if origin == BASELINE:
        return "baseline: Graph lists them as a member"
    if origin == DELTA:
        return f"delta: Graph {'no longer lists' if removed else 'lists'} them as a member"
    if origin == RESYNC:
        return "resync: the delta token expired and Graph's whole listing leaves them out"
    if origin == GROUP_DELETED:
        return f"graph group {group_id} was deleted: the bridge knew them as a member"
    return None
