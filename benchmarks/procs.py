"""Processes a benchmark runs: the bridge, the COR stand-in, the bare ceiling, PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OKTA_SECRET = "bench-okta-secret"  # noqa: S105 - a throwaway value for a loopback server
SCIM_TOKEN = "bench-scim-token"  # noqa: S105
ADMIN_TOKEN = "bench-admin-token"  # noqa: S105


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A server process on a loopback port; its stderr goes to a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}-{self.port}.log"
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(  # noqa: S603 - our own argv
                argv, env={**os.environ, **env}, cwd=workdir, stdout=out, stderr=out
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.log.name} exited early:\n{self.tail()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.log.name} not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextmanager
def running(proc: Proc, ready_path: str) -> Iterator[Proc]:
    try:
        proc.wait_ready(ready_path)
        yield proc
    finally:
        proc.stop()


def bridge(workdir: Path, database_url: str, cor_url: str, **extra: str) -> Proc:
    """`cor-bridge serve` on its own settings; COR is the stand-in at `cor_url` (…/sandbox/cor)."""
    env = {
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_MAPPING_FILE": str(workdir / "mapping.yaml"),
        "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "OKTA_HOOK_SECRET": OKTA_SECRET,
        "SCIM_TOKEN": SCIM_TOKEN,
        "COR_API_URL": cor_url,
        "COR_TOKEN_URL": cor_url + "/v1/oauth/token",
        "COR_CLIENT_ID": "sandbox-client",
        "COR_CLIENT_SECRET": "sandbox-secret",
        **{k.upper(): v for k, v in extra.items()},
    }
    argv = [str(BIN / "cor-bridge"), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    return Proc(argv, env, workdir, "bridge")


def standin(workdir: Path, latency_ms: float, users: str = "") -> Proc:
    """The COR sandbox in its own process, with `latency_ms` on every detach."""
    argv = [str(BIN / "python"), "-m", "benchmarks.standin", "{port}", str(latency_ms), users]
    return Proc(argv, {"PYTHONPATH": str(ROOT)}, workdir, "standin")


def ceiling(workdir: Path, database_url: str | None = None) -> Proc:
    """The bare endpoint (parses the Okta body, stores nothing), or with `database_url` the
    durable one (a row per event, group commit, 200 after the commit)."""
    argv = [str(BIN / "python"), "-m", "benchmarks.ceiling", "{port}"]
    argv += [database_url] if database_url else []
    env = {"PYTHONPATH": str(ROOT), "OKTA_HOOK_SECRET": OKTA_SECRET}
    return Proc(argv, env, workdir, "durable" if database_url else "ceiling")


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmHWM"], fields["VmRSS"]
