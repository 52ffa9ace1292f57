"""Intake: turns membership changes into detach jobs, in the caller's transaction.

`accept` runs a call's changes; `rules` decides, change by change in time order; `ledger`
is what it reads and writes, loaded and written in bulk once a call.
"""

from app.intake.accept import Decision, accept_changes

__all__ = ["Decision", "accept_changes"]
