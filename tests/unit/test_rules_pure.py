"""The rules on an in-memory snapshot: no database, a few milliseconds for the lot.

`rules.decide` takes what the store knows of a call's users (a Snapshot) and the call's
changes, and returns each change's entry and the call's plan. These tests build snapshots by
hand and read the plan; tests/unit/test_intake.py runs the same rules through the store on
both engines, test_intake_races.py what the store does when a stored job moved meanwhile.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.changes import ChangeKind, GroupRef, IgnoredEvent, MembershipChange, UserRef
from app.intake.rules import decide
from app.intake_plan import (
    Act,
    Applied,
    Entry,
    JobLine,
    Membership,
    Plan,
    PlannedJob,
    Snapshot,
    StoredJob,
    job_line,
    with_job_lines,
)
from app.mapping import Mapping

T0 = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
JANE = UserRef(id="00ujane", login="jane@acme.example")
ENG = GroupRef(id="00g8mo0l5wuTxmoIC0h7", name="eng-oncall")  # WS-ENG, WS-ONCALL
FIN = GroupRef(id="00g9fin0l5wuTxmoIC0h", name="finance")  # WS-FIN
PLATFORM = GroupRef(id="00gplatform000000000", name="platform")  # WS-ENG
UNMAPPED = GroupRef(id="00gnothing", name="book-club")
REGRANT = "re-granted by okta group 00g9fin0l5wuTxmoIC0h (finance) (event {})"


def change(
    kind: ChangeKind, group: GroupRef | None = FIN, minutes: int = 0, **extra: object
) -> MembershipChange:
    fields = {"provider": "okta", "event_id": f"ev-{kind.value}-{minutes}", "user": JANE}
    return MembershipChange(
        **{**fields, **extra},  # type: ignore[arg-type]
        occurred_at=T0 + timedelta(minutes=minutes),
        change=kind,
        group=group,
    )


def pair(group: GroupRef, member: bool, minutes: int = 0) -> Membership:
    at = T0 + timedelta(minutes=minutes)
    return Membership("okta", JANE.id, group.id, group.name, member, at, {"id": JANE.id})


def stored(job_id: int, workspace: str = "WS-FIN", state: str = "pending") -> StoredJob:
    return StoredJob(job_id, ("jane@acme.example", "OKTA", workspace), state, T0)


def run(mapping: Mapping, snapshot: Snapshot, *items: MembershipChange | IgnoredEvent):
    return decide(snapshot, items, mapping, NOW, timedelta(seconds=30))


def lines(entry: Entry | None, plan: Plan) -> list[str]:
    """The entry's detail as the store would render it, the plan's new jobs numbered 100 on."""
    assert entry is not None
    applied = Applied(job_ids={job: 100 + i for i, job in enumerate(plan.jobs)})
    return [
        line if isinstance(line, str)
        else job_line(line.act, applied.id_of(line.job), line.job.key[2], line.job.key[0],
                      line.reason)
        for line in entry.lines
    ]  # fmt: skip


def test_a_removal_plans_one_job_per_workspace(mapping):
    [entry], plan = run(mapping, Snapshot(), change(ChangeKind.removed, ENG))
    assert entry is not None and entry.decision == "queued"
    assert [(j.key[2], j.due, j.cancelled) for j in plan.jobs] == [
        ("WS-ENG", NOW + timedelta(seconds=30), None),
        ("WS-ONCALL", NOW + timedelta(seconds=30), None),
    ]
    assert lines(entry, plan) == [
        "queued job 100: detach WS-ENG from jane@acme.example",
        "queued job 101: detach WS-ONCALL from jane@acme.example",
    ]
    assert [(m.group_id, m.member) for m in plan.memberships] == [(ENG.id, False)]
    assert entry.recorded().detail == [] and entry.recorded().decision == "queued"
    assert [at for at, _ in entry.links()] == [0, 1]
    assert plan.assumed == {}


def test_an_event_seen_before_or_twice_in_the_call_is_planned_once(mapping):
    removal = change(ChangeKind.removed)
    entries, plan = run(mapping, Snapshot(seen={("okta", "ev-old")}), removal, removal)
    assert [e is None for e in entries] == [False, True]
    old = removal.model_copy(update={"event_id": "ev-old"})
    assert run(mapping, Snapshot(seen={("okta", "ev-old")}), old) == ([None], Plan())
    assert len(plan.entries) == 1


def test_a_group_the_mapping_does_not_list_is_recorded_not_sent(mapping):
    [entry], plan = run(mapping, Snapshot(), change(ChangeKind.removed, UNMAPPED))
    assert entry is not None and entry.decision == "unmapped"
    assert lines(entry, plan) == ["okta group 00gnothing (book-club) maps to no workspace"]
    assert plan.jobs == []


def test_a_re_grant_calls_off_a_stored_pending_job_counting_on_it_being_pending(mapping):
    [entry], plan = run(mapping, Snapshot(jobs=[stored(7)]), change(ChangeKind.added, FIN, 5))
    assert entry is not None and entry.decision == "granted"
    assert lines(entry, plan) == [f"cancelled job 7 (WS-FIN): {REGRANT.format('ev-added-5')}"]
    assert plan.assumed == {7: "pending"}


def test_a_re_grant_asks_a_running_job_not_to_be_retried(mapping):
    snapshot = Snapshot(jobs=[stored(7, state="running")])
    [entry], plan = run(mapping, snapshot, change(ChangeKind.added, FIN, 5))
    assert lines(entry, plan) == ["job 7 (WS-FIN) is being delivered; it will not be retried"]
    assert [line.act for line in entry.lines if isinstance(line, JobLine)] == [Act.ASKED]
    assert plan.assumed == {7: "running"}


def test_a_grant_older_than_the_removal_keeps_its_job(mapping):
    newer = StoredJob(7, ("jane@acme.example", "OKTA", "WS-FIN"), "pending", T0 + timedelta(1))
    [entry], plan = run(mapping, Snapshot(jobs=[newer]), change(ChangeKind.added, FIN, 5))
    assert lines(entry, plan) == ["kept job 7 (WS-FIN): its removal is newer"]
    assert plan.assumed == {}  # nothing done to it: it need not be held


def test_a_removal_joins_a_stored_pending_job_and_not_a_running_one(mapping):
    [entry], plan = run(mapping, Snapshot(jobs=[stored(7)]), change(ChangeKind.removed))
    assert lines(entry, plan) == ["joined pending job 7: detach WS-FIN from jane@acme.example"]
    assert (plan.jobs, plan.assumed) == ([], {7: "pending"})
    snapshot = Snapshot(jobs=[stored(7, state="running")])
    [entry], plan = run(mapping, snapshot, change(ChangeKind.removed))
    assert lines(entry, plan) == ["queued job 100: detach WS-FIN from jane@acme.example"]
    assert plan.assumed == {}


def test_the_states_found_at_the_write_decide_again(mapping):
    """What accept.py does when the store finds a stored job moved: the same call on the
    snapshot with the states found."""
    snapshot = Snapshot(jobs=[stored(7), stored(8, "WS-ENG")])
    claimed = snapshot.with_states({7: "running", 8: "gone"})
    assert claimed.jobs == [stored(7, state="running")]
    [entry], plan = run(mapping, claimed, change(ChangeKind.added, FIN, 5))
    assert lines(entry, plan) == ["job 7 (WS-FIN) is being delivered; it will not be retried"]
    [entry], plan = run(mapping, claimed, change(ChangeKind.removed))
    assert lines(entry, plan) == ["queued job 100: detach WS-FIN from jane@acme.example"]


@pytest.mark.parametrize("arrival", ["remove first", "add first"])
def test_a_removal_and_its_re_grant_in_one_call_write_a_cancelled_job(mapping, arrival):
    removal, readd = change(ChangeKind.removed, FIN, 0), change(ChangeKind.added, FIN, 5)
    items = [removal, readd] if arrival == "remove first" else [readd, removal]
    entries, plan = run(mapping, Snapshot(), *items)
    by_id = {e.row.source_event_id: e for e in entries if e is not None}
    [job] = plan.jobs
    assert isinstance(job, PlannedJob) and job.cancelled == REGRANT.format("ev-added-5")
    assert job.event is by_id["ev-removed-0"]
    assert lines(by_id["ev-removed-0"], plan) == [
        "queued job 100: detach WS-FIN from jane@acme.example"
    ]
    assert lines(by_id["ev-added-5"], plan) == [f"cancelled job 100 (WS-FIN): {job.cancelled}"]


def test_an_older_removal_than_what_is_known_is_superseded(mapping):
    snapshot = Snapshot(pairs=[pair(FIN, True, minutes=10)])
    [entry], plan = run(mapping, snapshot, change(ChangeKind.removed, FIN, 5))
    assert entry is not None and entry.decision == "superseded"
    assert plan.jobs == [] and plan.memberships == []


def test_a_workspace_another_current_group_grants_is_kept(mapping):
    snapshot = Snapshot(pairs=[pair(PLATFORM, True), pair(ENG, True)])
    [entry], plan = run(mapping, snapshot, change(ChangeKind.removed, ENG, 1))
    assert lines(entry, plan) == [
        "kept WS-ENG: still granted by okta group 00gplatform000000000 (platform)",
        "queued job 100: detach WS-ONCALL from jane@acme.example",
    ]


def test_the_idps_own_answer_decides_what_is_still_granted(mapping):
    removal = change(ChangeKind.removed, ENG, 1, member_of=(PLATFORM, ENG))
    [entry], plan = run(mapping, Snapshot(jobs=[stored(7, "WS-ENG")]), removal)
    assert lines(entry, plan) == [
        "cancelled job 7 (WS-ENG): still granted by okta group 00gplatform000000000 (platform) "
        "(asked Okta)",
        "kept WS-ENG: still granted by okta group 00gplatform000000000 (platform) (asked Okta)",
        "queued job 100: detach WS-ONCALL from jane@acme.example",
    ]


def test_a_deactivation_leaves_every_known_group_and_a_reactivation_gives_them_back(mapping):
    snapshot = Snapshot(pairs=[pair(ENG, True), pair(FIN, True), pair(UNMAPPED, True)])
    deactivated = change(ChangeKind.user_deactivated, None, 2)
    [entry], plan = run(mapping, snapshot, deactivated)
    assert sorted(j.key[2] for j in plan.jobs) == ["WS-ENG", "WS-FIN", "WS-ONCALL"]
    # The next call: what the store would read back, and the deactivation recorded.
    later = Snapshot(
        pairs=plan.memberships,
        jobs=[stored(i, j.key[2]) for i, j in enumerate(plan.jobs, start=1)],
        deactivations={("okta", JANE.id): [deactivated.occurred_at]},
    )
    [entry], plan = run(mapping, later, change(ChangeKind.user_reactivated, None, 3))
    assert entry is not None and entry.decision == "granted"
    assert lines(entry, plan)[0] == "rejoined okta group 00g8mo0l5wuTxmoIC0h7 (eng-oncall)"
    assert sorted(plan.assumed) == [1, 2, 3]
    # Without the deactivation recorded there is nothing to give back.
    later.deactivations = {}
    [entry], _ = run(mapping, later, change(ChangeKind.user_reactivated, None, 3))
    assert entry is not None and entry.decision == "no_known_groups"


def test_an_entra_removal_heard_twice_is_already_out(mapping):
    user = UserRef(id="e-jane", login="jane@acme.example")
    finance = GroupRef(id="g-fin", name="Finance")
    out = Membership("entra", user.id, finance.id, finance.name, False, T0, {"id": user.id})
    removal = change(ChangeKind.removed, finance, 5, provider="entra", user=user)
    [entry], plan = run(mapping, Snapshot(pairs=[out]), removal)
    assert entry is not None and entry.decision == "already_out"
    assert plan.jobs == []


def test_ignored_and_unresolved_events_are_recorded_with_why(mapping):
    ignored = IgnoredEvent(
        provider="okta", event_id="x1", occurred_at=T0, kind="user.session.start", reason="nope"
    )
    nameless = change(ChangeKind.removed, user=UserRef(id="00unologin"))
    entries, plan = run(mapping, Snapshot(), ignored, nameless)
    assert [(e.decision, e.cor_user_id) for e in entries if e] == [
        ("ignored", None),
        ("unresolved", None),
    ]
    assert plan.jobs == []


def test_the_rules_import_no_database():
    """The rules, their ledger and the plan's shapes import neither the store nor SQLAlchemy."""
    root = Path(__file__).resolve().parents[2] / "app"
    for path in ("intake/rules.py", "intake/ledger.py", "intake/texts.py", "intake_plan.py"):
        tree = ast.parse((root / path).read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith(("app.store", "sqlalchemy"))], path


def test_job_lines_go_back_where_they_were_and_a_stray_one_is_kept():
    """History keeps an event's plain lines and renders its job lines (from event_jobs) back
    in their places; a link whose place is past the end (links and lines disagreeing) is
    shown last rather than failing the whole history."""
    plain = ["member of okta group finance", "kept WS-ENG: still granted"]
    assert with_job_lines(plain, [(0, "queued job 7"), (3, "queued job 8")]) == [
        "queued job 7", "member of okta group finance", "kept WS-ENG: still granted",
        "queued job 8",
    ]  # fmt: skip
    assert with_job_lines([], [(5, "queued job 9")]) == ["queued job 9"]
    assert with_job_lines(plain, []) == plain
