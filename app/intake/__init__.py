"""Intake: turns membership changes into detach jobs, in the caller's transaction.

`accept` runs a call's changes: it reads the snapshot of their users (app/store/intake.py),
has `rules` decide on it, change by change in time order, with no database (`ledger` is the
snapshot as the rules change it, and the plan it becomes), and applies the plan in one pass.
"""

from app.intake.accept import Decision, accept_changes

__all__ = ["Decision", "accept_changes"]
