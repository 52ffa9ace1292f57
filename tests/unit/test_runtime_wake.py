"""After intake the worker is woken only for jobs that fall due before its next poll: with a
delivery delay, a wake-up would only make it claim nothing (between two group commits)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.changes import ChangeKind, GroupRef, MembershipChange, UserRef
from app.mapping import parse_mapping
from app.mapping_reload import MappingHolder
from app.runtime import Bridge
from app.settings import Settings
from app.store import Database
from tests.conftest import MAPPING


class Waker:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


@pytest.mark.parametrize(("delay", "woken"), [(0.0, 1), (0.5, 1), (1.0, 0), (60.0, 0)])
async def test_the_worker_is_woken_for_jobs_due_before_its_next_poll(
    db: Database, tmp_path: Path, delay: float, woken: int
):
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        bridge_mapping_file=str(tmp_path / "none.yaml"),
        bridge_delivery_delay_seconds=delay,
        bridge_poll_seconds=1.0,
    )
    bridge = Bridge(settings, db, MappingHolder(settings, parse_mapping(MAPPING, path="m.yaml")))
    worker = Waker()
    bridge.worker = worker  # type: ignore[assignment]
    removal = MembershipChange(
        provider="okta",
        event_id="e-1",
        occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
        change=ChangeKind.removed,
        user=UserRef(id="00ujane", login="jane@acme.example"),
        group=GroupRef(id="00g9fin0l5wuTxmoIC0h", name="finance"),
    )
    [decision] = await bridge.submit([removal])
    assert decision.decision == "queued" and decision.jobs
    assert worker.woken == woken
