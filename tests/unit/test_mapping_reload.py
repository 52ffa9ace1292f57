"""Mapping reloads: a good file replaces the table, a bad one keeps the last good table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.mapping_reload import MappingHolder, load_checked_mapping
from app.settings import Settings
from tests.conftest import MAPPING
from tests.fake_cor import FakeCor
from tests.inprocess import make_client
from tests.waiting import wait_for_async


def holder(tmp_path: Path) -> tuple[MappingHolder, Path]:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    settings = Settings(_env_file=None, bridge_mapping_file=str(path))  # type: ignore[call-arg]
    return MappingHolder(settings, load_checked_mapping(settings)), path


def touch_later(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_good_file_replaces_the_table(tmp_path: Path):
    tables, path = holder(tmp_path)
    assert not tables.changed()
    touch_later(path, MAPPING.replace("[WS-FIN]", "[WS-FIN, WS-AUDIT]"))
    assert tables.changed()
    assert tables.reload()
    assert tables.error is None
    assert "WS-AUDIT" in {w for r in tables.current.rules for w in r.workspaces}
    assert not tables.changed()


def test_a_bad_file_keeps_the_last_good_table_and_says_why(tmp_path: Path):
    tables, path = holder(tmp_path)
    good = tables.current
    touch_later(path, "groups:\n  - provider: okta\n    workspaces: [WS-A]\n")
    assert not tables.reload()
    assert tables.current is good
    assert tables.error is not None and f"{path}:2:" in tables.error
    path.unlink()
    assert not tables.reload()
    assert tables.current is good


@pytest.mark.parametrize("bad", [False, True])
async def test_the_running_bridge_picks_up_a_changed_file(tmp_path: Path, bad: bool):
    async with make_client(tmp_path, FakeCor(), bridge_mapping_poll_seconds=0.05) as client:
        path = tmp_path / "mapping.yaml"
        touch_later(
            path,
            "groups: [oops"
            if bad
            else MAPPING + "  - {provider: okta, group_id: g9, workspaces: [WS-9]}\n",
        )

        async def reloaded() -> bool:
            mapping = (await client.get("/readyz")).json()["checks"]["mapping"]
            return bool(mapping["last_reload_error"]) if bad else mapping["groups"] == 5

        await wait_for_async(reloaded)
        ready = await client.get("/readyz")
        assert ready.status_code == 200  # the last good table is still in force
        assert ready.json()["checks"]["mapping"]["groups"] == (4 if bad else 5)
