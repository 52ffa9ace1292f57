"""Mapping reload in a running bridge: on SIGHUP and on file change; a bad file is refused."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.builders import T0, minutes, okta_delivery, okta_event
from tests.integration.harness import MAPPING_FILE, Bridge, Sandbox, StartBridge, wait_for

pytestmark = pytest.mark.integration

REMOVE = "group.user_membership.remove"
OPS = "00gnew0000000000000"
NEW_RULE = f"""
  - provider: okta
    group_id: {OPS}   # ops
    workspaces: [WS-OPS]
"""
# Broken on its last line: a rule must grant at least one workspace.
BROKEN_RULE = """
  - provider: okta
    group_id: 00gbroken00000000000
    workspaces: []
"""


def copy_mapping(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.yaml"
    shutil.copyfile(MAPPING_FILE, path)
    return path


def replace_file(path: Path, text: str) -> None:
    """Write `text` as editors and config management do: a new file renamed over the old."""
    staged = path.with_suffix(".tmp")
    staged.write_text(text)
    os.replace(staged, path)


def mapping_check(bridge: Bridge) -> dict[str, Any]:
    """checks.mapping of /readyz, which answers 200 throughout."""
    mapping: dict[str, Any] = bridge.readyz()["checks"]["mapping"]
    return mapping


def wait_mapping(bridge: Bridge, what: str, **want: Any) -> dict[str, Any]:
    """Wait until checks.mapping shows every field of `want`."""

    def probe() -> dict[str, Any] | None:
        mapping = mapping_check(bridge)
        return mapping if all(mapping.get(k) == v for k, v in want.items()) else None

    return wait_for(probe, timeout=5.0, what=what)


def wait_refused(bridge: Bridge) -> dict[str, Any]:
    """Wait until checks.mapping reports a refused reload."""

    def probe() -> dict[str, Any] | None:
        mapping = mapping_check(bridge)
        return mapping if mapping["last_reload_error"] else None

    return wait_for(probe, timeout=5.0, what="the broken file refused")


def remove_from_ops(bridge: Bridge, user: str, at_minute: float) -> str:
    """An Okta hook removal of `user` from the ops group; its event uuid."""
    event = okta_event(
        REMOVE, user=user, group_id=OPS, group_name="ops", at=T0 + minutes(at_minute)
    )
    bridge.deliver(okta_delivery(event))
    return str(event["uuid"])


def decision(bridge: Bridge, user: str, event_uuid: str) -> str:
    [event] = [
        e
        for e in bridge.history(f"{user}@acme.example")["events"]
        if e["source_event_id"] == event_uuid
    ]
    return str(event["decision"])


def hangup(bridge: Bridge) -> None:
    assert bridge.proc is not None and bridge.proc.poll() is None
    bridge.proc.send_signal(signal.SIGHUP)


def assert_ops_detached(sandbox: Sandbox, user: str) -> None:
    [call] = sandbox.wait_detached(f"{user}@acme.example", {"WS-OPS"})
    assert call["body"] == {"workspaces": ["WS-OPS"], "metadata": {"source": "OKTA"}}


def test_sighup_reloads_and_a_broken_file_keeps_the_last_good_table(
    start_bridge: StartBridge, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = copy_mapping(tmp_path)
    # Polling an hour apart: only SIGHUP makes it read the file in this test.
    bridge = start_bridge(BRIDGE_MAPPING_FILE=str(path), BRIDGE_MAPPING_POLL_SECONDS="3600")
    before = mapping_check(bridge)
    assert before["file"] == str(path)
    assert before["last_reload_error"] is None
    groups = before["groups"]

    with path.open("a") as f:
        f.write(NEW_RULE)
    # Not read yet: the ops group maps to nothing.
    # Someone else: a second removal of the same person, with no join between, would be a
    # no-op ("already_out"); a changed mapping is applied to the past by an operator's replay.
    early = remove_from_ops(bridge, "noa", at_minute=0)
    assert decision(bridge, "noa", early) == "unmapped"
    assert mapping_check(bridge)["groups"] == groups

    hangup(bridge)
    wait_mapping(bridge, "the new rule after SIGHUP", groups=groups + 1, last_reload_error=None)
    remove_from_ops(bridge, "mia", at_minute=1)
    assert_ops_detached(sandbox, "mia")

    with path.open("a") as f:
        f.write(BROKEN_RULE)
    broken_line = len(path.read_text().splitlines())
    hangup(bridge)
    refused = wait_refused(bridge)
    assert refused["groups"] == groups + 1  # the last good table stays in force
    assert refused["last_reload_error"].startswith(f"{path}:{broken_line}: workspaces:")
    remove_from_ops(bridge, "li", at_minute=2)
    assert_ops_detached(sandbox, "li")
    assert bridge.proc is not None and bridge.proc.poll() is None


def test_a_changed_file_is_reloaded_without_a_signal(
    start_bridge: StartBridge, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = copy_mapping(tmp_path)
    good = path.read_text()
    bridge = start_bridge(BRIDGE_MAPPING_FILE=str(path), BRIDGE_MAPPING_POLL_SECONDS="0.2")
    groups = mapping_check(bridge)["groups"]

    replace_file(path, good + NEW_RULE)
    wait_mapping(bridge, "the new rule by polling", groups=groups + 1, last_reload_error=None)
    remove_from_ops(bridge, "mia", at_minute=1)
    assert_ops_detached(sandbox, "mia")

    replace_file(path, good + NEW_RULE + BROKEN_RULE)
    refused = wait_refused(bridge)
    assert refused["groups"] == groups + 1
    broken_line = len((good + NEW_RULE + BROKEN_RULE).splitlines())
    assert refused["last_reload_error"].startswith(f"{path}:{broken_line}: workspaces:")
    remove_from_ops(bridge, "li", at_minute=2)
    assert_ops_detached(sandbox, "li")

    # Fixed again: back in force, the error gone; the ops rule removed, its group unmapped.
    replace_file(path, good)
    wait_mapping(bridge, "the fixed file", groups=groups, last_reload_error=None)
    late = remove_from_ops(bridge, "jane", at_minute=3)
    assert decision(bridge, "jane", late) == "unmapped"
