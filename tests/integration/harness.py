"""Processes for the integration tests: the bridge and the COR sandbox on loopback HTTP.

`Service` starts `python -m app.cli ...` in its own working directory with a clean
environment, logs to a file there, waits for its readiness paths, and stops it with
SIGTERM then SIGKILL. `Sandbox` and `Bridge` add helpers for what tests ask of each.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
MAPPING_FILE = REPO / "mapping.yaml"
HOOK_SECRET = "integration-okta-secret"
ADMIN_TOKEN = "integration-admin-token"
SCIM_TOKEN = "integration-scim-token"
SCIM_JSON = "application/scim+json"
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_SETTING_PREFIXES = ("BRIDGE_", "COR_", "OKTA_", "SCIM_", "GRAPH_")
# Last resort: whatever a crashed fixture left running dies with the test session.
_ALL_PROCESSES: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**settings: str | None) -> dict[str, str]:
    """os.environ without any bridge setting, plus `settings` (None means: leave unset)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_SETTING_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    # The editable install finds `app` already; this keeps a plain checkout working too.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update({k: v for k, v in settings.items() if v is not None})
    return env


@dataclass
class Service:
    """One subprocess speaking HTTP on a loopback port."""

    name: str
    args: list[str]
    env: dict[str, str] = field(repr=False)
    workdir: Path
    ready_paths: tuple[str, ...] = ("/healthz",)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path = field(init=False)
    http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"
        self.http = httpx.Client(timeout=10.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        """Start the process and wait until every ready path answers 200."""
        for _ in range(3):  # a port taken between free_port() and bind: try another
            self.port = free_port()
            self._spawn()
            if self._wait_ready():
                return self
            self.stop()
            if "address already in use" not in self.log_tail().lower():
                break
        raise AssertionError(f"{self.name} did not become ready:\n{self.log_tail()}")

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "app.cli", *self.args, "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {' '.join(cmd[1:])}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is pytest's, not theirs
            )
        _ALL_PROCESSES.append(self.proc)

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        pending = list(self.ready_paths)
        while pending and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.http.get(self.url + pending[0], timeout=1.0).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        return not pending

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Send `sig` (SIGKILL after STOP_TIMEOUT if it lingers); returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(ValueError):
            _ALL_PROCESSES.remove(proc)
        self.proc = None
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        return self.stop(signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        self.http.close()

    def log_tail(self, lines: int = 80) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Sandbox(Service):
    """The COR stand-in, with helpers for its test knobs."""

    @property
    def cor_url(self) -> str:
        return f"{self.url}/sandbox/cor"

    @property
    def okta_url(self) -> str:
        return f"{self.url}/sandbox/okta"

    def reset(self) -> None:
        self.http.post(f"{self.cor_url}/reset").raise_for_status()
        self.okta("POST", "/reset")

    def okta(self, method: str, path: str, body: Any = None) -> Any:
        """One of the Okta stand-in's knobs (app/okta/standin.py), under /_standin."""
        reply = self.http.request(method, f"{self.okta_url}/_standin{path}", json=body)
        reply.raise_for_status()
        return reply.json()

    def calls(self, path_contains: str | None = None) -> list[dict[str, Any]]:
        params = {"path_contains": path_contains} if path_contains else None
        reply = self.http.get(f"{self.cor_url}/calls", params=params)
        reply.raise_for_status()
        calls: list[dict[str, Any]] = reply.json()["calls"]
        return calls

    def detaches(self, user: str | None = None) -> list[dict[str, Any]]:
        """Detach calls that were answered, optionally for one COR user id."""
        return [
            c
            for c in self.calls("/detach")
            if c["status"] is not None and (user is None or c["user_id"] == user)
        ]

    def wait_detached(
        self, user: str, workspaces: set[str], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until 200 detaches for `user` covered `workspaces`; returns those calls."""

        def probe() -> list[dict[str, Any]] | None:
            ok = [c for c in self.detaches(user) if c["status"] == 200]
            covered = {w for c in ok for w in c["body"]["workspaces"]}
            return ok if workspaces <= covered else None

        return wait_for(probe, timeout=timeout, what=f"{user} detached from {sorted(workspaces)}")

    def fault(self, status: int, *, times: int = 1, path_contains: str = "/detach", **more: Any):
        body = {"status": status, "times": times, "path_contains": path_contains, **more}
        self.http.post(f"{self.cor_url}/faults", json=body).raise_for_status()

    def clear_faults(self) -> None:
        self.http.delete(f"{self.cor_url}/faults").raise_for_status()

    def revoke_tokens(self) -> int:
        reply = self.http.post(f"{self.cor_url}/tokens/revoke")
        reply.raise_for_status()
        return int(reply.json()["revoked"])

    def put_user(self, user_id: str, workspaces: list[str], source: str = "OKTA") -> None:
        body = {
            "id": user_id,
            "source": source,
            "name": user_id.split("@")[0].title(),
            "email": user_id,
            "workspaces": workspaces,
        }
        self.http.post(f"{self.cor_url}/users", json=body).raise_for_status()


def parse_at(call: dict[str, Any]) -> datetime:
    """When the sandbox received a call."""
    return datetime.fromisoformat(call["at"])


class Bridge(Service):
    """A running `cor-bridge serve`, with helpers for its hooks and admin API."""

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", **kwargs.pop("headers", {})}
        return self.http.request(method, f"{self.url}/admin{path}", headers=headers, **kwargs)

    def post_okta(self, delivery: Any, *, secret: str | None = HOOK_SECRET) -> httpx.Response:
        headers = {"Authorization": secret} if secret is not None else {}
        return self.http.post(f"{self.url}/hooks/okta", json=delivery, headers=headers)

    def deliver(self, delivery: Any) -> dict[str, Any]:
        """POST an Okta delivery that must be accepted."""
        reply = self.post_okta(delivery)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def scim(
        self, method: str, path: str, *, token: str | None = SCIM_TOKEN, **kwargs: Any
    ) -> httpx.Response:
        """A request to /scim/v2{path} with the SCIM bearer token and content type."""
        headers = {"Content-Type": SCIM_JSON, **kwargs.pop("headers", {})}
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        return self.http.request(method, f"{self.url}/scim/v2{path}", headers=headers, **kwargs)

    def readyz(self) -> dict[str, Any]:
        """The body of /readyz (which must answer 200)."""
        reply = self.http.get(f"{self.url}/readyz")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until the outbox has no pending or running job."""
        wait_for(
            lambda: not self.jobs(state=["pending", "running"]),
            timeout=timeout,
            what="no pending or running job",
        )

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        reply = self.admin("GET", "/jobs", params=filters)
        assert reply.status_code == 200, reply.text
        jobs: list[dict[str, Any]] = reply.json()["jobs"]
        return jobs

    def job(self, job_id: int) -> dict[str, Any]:
        reply = self.admin("GET", f"/jobs/{job_id}")
        assert reply.status_code == 200, reply.text
        job: dict[str, Any] = reply.json()
        return job

    def history(self, user: str) -> dict[str, Any]:
        reply = self.admin("GET", f"/users/{user}/history")
        assert reply.status_code == 200, reply.text
        history: dict[str, Any] = reply.json()
        return history

    def wait_jobs(
        self, state: str, *, count: int, timeout: float = 10.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Wait until at least `count` jobs matching `filters` are all in `state`."""

        def probe() -> list[dict[str, Any]] | None:
            jobs = self.jobs(**filters)
            done = len(jobs) >= count and all(j["state"] == state for j in jobs)
            return jobs if done else None

        return wait_for(probe, timeout=timeout, what=f"{count} {state} jobs for {filters}")

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        text = self.http.get(f"{self.url}/metrics").text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            if metric != name:
                continue
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if got == want:
                return float(value)
        return 0.0


StartBridge = Callable[..., Bridge]
"""The `start_bridge` fixture: start(workdir=None, **env overrides) -> a ready Bridge."""


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_ALL_PROCESSES):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# Okta groups of the repository's mapping.yaml.
ENG_ONCALL = "00g8mo0l5wuTxmoIC0h7"  # WS-ENG, WS-ONCALL
FINANCE = "00g9fin0l5wuTxmoIC0h"  # WS-FIN
PLATFORM = "00gplatform000000000"  # WS-ENG
JANE_OKTA_ID = "00uptu0jj9V91p5QM0h7"  # jane in the recorded fixtures
