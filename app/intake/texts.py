"""The plain lines the rules write into an event's detail (job lines: app/intake_plan.py)."""

from __future__ import annotations

from app.changes import GroupRef, MembershipChange
from app.intake_plan import Membership

# Who a `member_of` list came from, for the history: the IdP's own answer.
ASKED = {"okta": "asked Okta", "entra": "asked Graph"}


def group_ref(m: Membership) -> GroupRef:
    return GroupRef(id=m.group_id, name=m.group_name)


def group_text(change: MembershipChange) -> str:
    assert change.group is not None
    return ref_text(change.provider, change.group)


def membership_text(provider: str, m: Membership) -> str:
    return ref_text(provider, group_ref(m))


def ref_text(provider: str, group: GroupRef) -> str:
    name = f" ({group.name})" if group.name else ""
    return f"{provider} group {group.id}{name}"


def superseded_text(newer: Membership) -> str:
    state = "member" if newer.member else "not a member"
    return f"older than what is known: {state} since {newer.changed_at.isoformat()}"


def already_out_text(change: MembershipChange, known: Membership) -> str:
    when = known.changed_at.isoformat()
    return (
        f"already out of {group_text(change)} since {when}, with no join since: nothing more to do"
    )
