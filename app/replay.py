"""Replay: send dead or cancelled jobs again, unless that would now be wrong.

An operator replays a job after fixing why COR refused it (a user missing in COR, say).
Time has passed since the removal, so each job meets the rules again, against what the
bridge knows now; a job is skipped, with the reason, when:

- it is done: COR confirmed this detach. Sending it again would make one change two
  detaches; an operator who means it posts an explicit change (`POST /admin/changes`).
- it is pending or running: it is on its way already.
- its COR user id cannot be one URL path segment ("." or "..", queued before intake
  refused such ids): sending it would only make it a dead letter again.
- another pending or running job does the same detach (user, source, workspace).
- the workspace is still granted: the user is (again) in a group that grants it under the
  mapping in force — a later `added`, or a rule added since. This is intake's still-granted
  rule, and with it supersede: a newer `added` for the group the removal was about leaves
  the user a member of it. A replay must not take away what the IdP gave back.

Everything else (dead, cancelled) becomes pending again. The checks and the requeue run in
intake's turn (`serialize_intake`): a grant accepted meanwhile is seen, and two replays of
one job at once requeue it once. A dry run applies the same checks and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from app.changes import GroupRef
from app.http import unsafe_segment_reason
from app.mapping import Mapping
from app.store import events as event_store
from app.store import jobs as job_store
from app.store import memberships as membership_store
from app.store.db import serialize_intake


@dataclass(frozen=True)
class Verdict:
    """What a replay does with one job: send it again, or skip it and why."""

    job: dict[str, Any]
    skip: str | None = None


def judge_jobs(conn: Connection, mapping: Mapping, ids: Sequence[int]) -> list[Verdict]:
    """The verdict on each job (unknown ids are left out), in the order of `ids`."""
    found = {j["id"]: j for j in job_store.get_jobs(conn, ids)}
    return [Verdict(found[i], _why_not(conn, mapping, found[i])) for i in ids if i in found]


def replay_jobs(
    conn: Connection, mapping: Mapping, ids: Sequence[int], now: datetime
) -> list[Verdict]:
    """Requeue every job the rules let through; the verdicts say what happened to each."""
    serialize_intake(conn)
    verdicts = judge_jobs(conn, mapping, ids)
    done = []
    for verdict in verdicts:
        if verdict.skip is None:
            # The outbox has the last word on "one pending job per detach".
            verdict = Verdict(verdict.job, job_store.requeue(conn, verdict.job, now))
        done.append(verdict)
    return done


def _why_not(conn: Connection, mapping: Mapping, job: dict[str, Any]) -> str | None:
    state = job["state"]
    if state == job_store.DONE:
        return "already done: COR confirmed this detach; post a change to send another"
    if state in (job_store.PENDING, job_store.RUNNING):
        return f"already {state}"
    unsafe = unsafe_segment_reason(job["cor_user_id"])
    if unsafe is not None:  # queued before intake refused such ids: it would die again
        return f"cannot be sent: the COR user id {unsafe}"
    twin = job_store.open_twin(conn, (job["cor_user_id"], job["source"], job["workspace"]))
    if twin is not None:
        return f"job {twin.id} is already {twin.state} for the same detach"
    return _still_granted(conn, mapping, job)


def _still_granted(conn: Connection, mapping: Mapping, job: dict[str, Any]) -> str | None:
    """Why the job's workspace is still the user's, or None when nothing grants it now."""
    provider, workspace = job["provider"], job["workspace"]
    # Every IdP id of this provider that resolved to the job's COR user, the job's own too.
    for user_id in event_store.idp_user_ids(conn, provider, job["cor_user_id"]):
        for m in membership_store.list_user_groups(conn, provider, user_id):
            group = GroupRef(id=m.group_id, name=m.group_name)
            if workspace in mapping.workspaces_for(provider, group):
                name = f" ({m.group_name})" if m.group_name else ""
                return (
                    f"still granted: {user_id} is in {provider} group {m.group_id}{name} "
                    f"(since {m.changed_at.isoformat()}), which grants {workspace}"
                )
    return None
