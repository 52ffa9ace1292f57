"""The outbox's state machine: every change of a job's state is one of these transitions.

    enqueue ──► pending ──claim──► running ──complete──► done
                  ▲  ▲               │ │ └──bury──► dead
                  │  └──retry/split──┘ └──release (SQLite start) / lapsed lease: claim again
                  └──requeue (replay of dead or cancelled)
    cancel: pending ► cancelled; running ► asked (the try under way ends cancelled)

The outbox keeps **one pending job per detach** (COR user, source, workspace; the partial
unique index uq_jobs_pending). Every transition that makes a job pending keeps it: enqueue
joins the pending twin, retry/split/release fold a job into a twin queued meanwhile, and
requeue refuses while a twin is open. A re-grant's request to call off a running job is kept
on the row (cancel_reason) and honoured by the transitions here, nowhere else.

Intake's and operators' transitions are in orders.py, the worker's in claims.py (claim,
lease, release) and transitions.py (outcomes); reads.py reads; model.py names the states and
rows.
"""

from app.store.jobs.claims import claim, drop_called_off, extend, release
from app.store.jobs.model import (
    CANCELLED,
    DEAD,
    DONE,
    FINISHED,
    OPEN,
    PENDING,
    RUNNING,
    STATES,
    Attempt,
    AttemptOutcome,
    Called,
    Job,
    JobKey,
    JobState,
    NewJob,
    OpenJob,
)
from app.store.jobs.orders import cancel, enqueue, requeue
from app.store.jobs.reads import (
    called_off,
    get_attempts,
    get_jobs,
    open_jobs_of,
    open_twin,
    pending_job_id,
    queue_stats,
    select_job_ids,
)
from app.store.jobs.transitions import (
    Applied,
    Completed,
    apply,
    bury,
    complete,
    complete_many,
    retry,
    split,
)

__all__ = [
    "CANCELLED",
    "DEAD",
    "DONE",
    "FINISHED",
    "OPEN",
    "PENDING",
    "RUNNING",
    "STATES",
    "Applied",
    "Attempt",
    "AttemptOutcome",
    "Called",
    "Completed",
    "Job",
    "JobKey",
    "JobState",
    "NewJob",
    "OpenJob",
    "apply",
    "bury",
    "called_off",
    "cancel",
    "claim",
    "complete",
    "complete_many",
    "drop_called_off",
    "enqueue",
    "extend",
    "get_attempts",
    "get_jobs",
    "open_jobs_of",
    "open_twin",
    "pending_job_id",
    "queue_stats",
    "release",
    "requeue",
    "retry",
    "select_job_ids",
    "split",
]  # fmt: skip
