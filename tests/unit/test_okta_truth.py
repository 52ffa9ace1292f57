"""Whatever the order of Okta's events and whatever Okta answers when asked, nothing is
detached while Okta says a current mapped group of the user grants it (DESIGN.md section 8).

The checker (app/okta/checker.py) hands intake each removal with `member_of` set to Okta's
answer; these tests drive intake with such removals on a real database, as the checker would.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.changes import ChangeKind, GroupRef, MembershipChange, UserRef
from app.intake import accept_changes
from app.mapping import parse_mapping
from app.store import Database
from app.store.jobs import open_jobs_of
from tests.conftest import MAPPING
from tests.examples import examples

T0 = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
JANE = UserRef(id="00ujane", login="jane@acme.example")
GROUPS = [
    GroupRef(id="00g8mo0l5wuTxmoIC0h7", name="eng-oncall"),  # WS-ENG, WS-ONCALL
    GroupRef(id="00gplatform000000000", name="platform"),  # WS-ENG
    GroupRef(id="00g9fin0l5wuTxmoIC0h", name="finance"),  # WS-FIN
    GroupRef(id="00gnothing", name="book-club"),  # unmapped
]
KINDS = [ChangeKind.added, ChangeKind.removed, ChangeKind.user_deactivated]


@st.composite
def a_change(draw: st.DrawFn) -> MembershipChange:
    kind = draw(st.sampled_from(KINDS))
    asked = kind is not ChangeKind.added  # the checker asks Okta before removals
    return MembershipChange(
        provider="okta",
        event_id=f"ev-{draw(st.integers(0, 30))}",
        occurred_at=T0 + timedelta(minutes=draw(st.integers(0, 6))),  # any arrival order
        change=kind,
        user=JANE,
        group=draw(st.sampled_from(GROUPS)) if kind is not ChangeKind.user_deactivated else None,
        member_of=tuple(draw(st.sets(st.sampled_from(GROUPS), max_size=3))) if asked else None,
    )


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(a_change(), min_size=1, max_size=10))
def test_nothing_is_detached_that_a_current_group_grants(changes: list[MembershipChange]):
    mapping = parse_mapping(MAPPING, path="test-mapping.yaml")
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{Path(folder)}/b.db")
        db.migrate()
        try:
            for change in changes:  # in the order they arrive, one delivery each
                with db.begin() as conn:
                    [decision] = accept_changes(conn, mapping, [change], now=NOW)
                    if change.change is not ChangeKind.removed or decision.decision == "duplicate":
                        continue
                    assert change.group is not None and change.member_of is not None
                    granted = {
                        w
                        for g in change.member_of
                        if g.id != change.group.id
                        for w in mapping.workspaces_for("okta", g)
                    }
                    queued = {j.workspace for j in open_jobs_of(conn, {JANE.login or ""})
                              if j.id in decision.jobs}  # fmt: skip
                    assert not queued & granted, (decision, granted)
                    if decision.decision == "superseded":
                        continue
                    # And no detach queued by an earlier removal waits for a granted workspace.
                    waiting = {
                        j.workspace
                        for j in open_jobs_of(conn, {JANE.login or ""})
                        if j.event_time <= change.occurred_at
                    }
                    assert not waiting & granted, (decision, waiting, granted)
        finally:
            db.dispose()
