"""The operator commands against a running bridge (--url) and against its database."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.builders import okta_delivery, okta_event
from tests.integration.harness import ADMIN_TOKEN, FINANCE, Bridge, Sandbox, clean_env

pytestmark = pytest.mark.integration

GHOST = "ghost@acme.example"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `cor-bridge ARGS` as a user would, with a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(**env),
        check=False,
    )


def make_dead_letter(bridge: Bridge) -> int:
    removal = okta_event(
        "group.user_membership.remove", user="ghost", group_id=FINANCE, group_name="finance"
    )
    bridge.deliver(okta_delivery(removal))
    [dead] = bridge.wait_jobs("dead", count=1, cor_user_id=GHOST)
    return int(dead["id"])


def test_jobs_history_and_replay_over_the_admin_api(bridge: Bridge, sandbox: Sandbox) -> None:
    dead = make_dead_letter(bridge)
    remote = ("--url", bridge.url)

    listed = cli("jobs", "--state", "dead", *remote, BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN)
    assert listed.returncode == 0, listed.stderr
    [header, row] = listed.stdout.strip().splitlines()
    assert header.split()[:4] == ["ID", "STATE", "USER", "WORKSPACE"]
    assert row.split()[:4] == [str(dead), "dead", GHOST, "WS-FIN"]
    assert "400 ZC001" in row

    told = cli("history", GHOST, *remote, "--token", ADMIN_TOKEN)
    assert told.returncode == 0, told.stderr
    assert f"queued job {dead}: detach WS-FIN from {GHOST}" in told.stdout

    sandbox.put_user(GHOST, ["WS-FIN"])
    preview = cli("replay", "--dry-run", *remote, BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN)
    assert preview.stdout.strip() == f"would replay 1 job(s): {dead}"
    replayed = cli("replay", *remote, BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == "replayed 1 job(s): 1 requeued"
    sandbox.wait_detached(GHOST, {"WS-FIN"})


def test_commands_on_the_database_directly(bridge: Bridge, sandbox: Sandbox) -> None:
    dead = make_dead_letter(bridge)
    database = ("--database", bridge.env["BRIDGE_DATABASE_URL"])

    listed = cli("jobs", "--json", "--user", GHOST, *database)
    assert listed.returncode == 0, listed.stderr
    assert '"state": "dead"' in listed.stdout

    sandbox.put_user(GHOST, ["WS-FIN"])
    replayed = cli("replay", str(dead), *database)
    assert replayed.stdout.strip() == "replayed 1 job(s): 1 requeued"
    # The running bridge's worker finds the requeued job at its next poll.
    sandbox.wait_detached(GHOST, {"WS-FIN"})


def test_clear_errors(bridge: Bridge) -> None:
    wrong = cli("jobs", "--url", bridge.url, "--token", "nope")
    assert wrong.returncode == 2
    assert "401" in wrong.stderr and "nope" not in wrong.stderr
    missing = cli("jobs", "--url", bridge.url)
    assert missing.returncode == 2 and "admin token" in missing.stderr
    unknown = cli("replay", "424242", "--url", bridge.url, "--token", ADMIN_TOKEN)
    assert unknown.returncode == 2 and "no job with id 424242" in unknown.stderr
    bad_state = cli("jobs", "--state", "lost", "--url", bridge.url, "--token", ADMIN_TOKEN)
    assert bad_state.returncode == 2 and "unknown state" in bad_state.stderr


def test_dead_letters_listed_and_replayed(bridge: Bridge) -> None:
    """A removal whose login cannot be a COR user id (`..` would move the call off its route)
    is an unresolved dead letter: listed from the API and the database, replayed only
    through a running bridge's intake."""
    removal = okta_event(
        "group.user_membership.remove", user="dotdot", group_id=FINANCE, group_name="finance"
    )
    removal["target"][0]["alternateId"] = ".."
    bridge.deliver(okta_delivery(removal))
    remote = ("--url", bridge.url, "--token", ADMIN_TOKEN)
    database = ("--database", bridge.env["BRIDGE_DATABASE_URL"])

    listed = cli("dead-letters", "list", *remote)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "jobs: dead jobs (replay with `cor-bridge replay ID`): none"
    at = lines.index("unresolved: removals with no COR user id: 1")
    letter_id = lines[at + 1].split()[0]
    assert "okta  .." in lines[at + 1] and "not a usable identifier" in lines[at + 1]
    assert cli("dead-letters", "list", "--json", *database).stdout.count('"kind": "removed"') == 1

    told = cli("history", "..", *remote)  # a dot segment stays one: not normalised away
    assert told.returncode == 0, told.stderr
    assert told.stdout.splitlines()[0] == "history of .."
    assert "unresolved" in told.stdout

    local = cli("dead-letters", "replay", "--unresolved", letter_id, *database)
    assert local.returncode == 2 and "replay it with --url" in local.stderr
    nothing = cli("dead-letters", "replay", *remote)
    assert nothing.returncode == 2 and "name at least one dead letter" in nothing.stderr

    replayed = cli("dead-letters", "replay", "--unresolved", letter_id, *remote)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"replayed unresolved: {letter_id}"
    again = cli("dead-letters", "replay", "--unresolved", letter_id, *remote)
    assert again.stdout.strip() == f"not a dead letter (any more) unresolved: {letter_id}"
    # Sent through intake again with the same login: unresolved again, a new dead letter.
    after = cli("dead-letters", "list", *remote).stdout.splitlines()
    assert "unresolved: removals with no COR user id: 1" in after
    assert (
        after[after.index("unresolved: removals with no COR user id: 1") + 1].split()[0]
        != letter_id
    )
