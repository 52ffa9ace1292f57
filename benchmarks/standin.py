"""The COR stand-in for benchmarks: the sandbox's COR (app/sandbox/: its users, tokens and
answers) behind a lean HTTP/1.1 server on asyncio streams, in a process of its own, with a
fixed latency on every detach: counted from the moment its request head is read (its `at` in
the call log) to the answer, this server's own work included (asyncio's timer adds ~0.5 ms).

The sandbox's FastAPI app costs ~2 ms of CPU a request on the benchmark machine: at 400
detaches/s that is most of a core, which the bridge it measures needs too (it did 315
detaches/s at 8 connections on its own, 376 at 32). This server answers the same routes
with the same handlers (`_change_handler`, `_token_handler`) for a small fraction of that;
`ceiling` measures it in the same run, so a drain number is read against what the stand-in
itself can do.

Routes (under /sandbox/cor): POST /v1/oauth/token, PUT /v2/integrations/users/{id}/detach,
GET /calls (?path_contains=), DELETE /calls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import sys
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from app.sandbox import DEFAULT_USERS, WORKSPACES, SeedUser
from app.sandbox.routes import _change_handler, _token_handler
from app.sandbox.state import SandboxState

PREFIX = "/sandbox/cor"
DETACH = "/v2/integrations/users/"


def seed(spec: str) -> list[SeedUser]:
    """`prefix:count,...` -> users prefix0@acme.example ... holding every workspace."""
    users = list(DEFAULT_USERS)
    for part in filter(None, spec.split(",")):
        prefix, _, count = part.partition(":")
        for i in range(int(count or 1)):
            login = f"{prefix}{i}@acme.example"
            users.append(
                SeedUser(id=login, source="OKTA", name=login, email=login, workspaces=[*WORKSPACES])
            )
    return users


class Cor:
    """COR's token and detach routes over the sandbox's state, and its call log."""

    def __init__(self, users: list[SeedUser], latency: float, timer: Timer | None = None) -> None:
        self.state = SandboxState(users)
        self.latency = latency
        self.timer = timer
        self.calls: list[dict[str, Any]] = []
        self.token = _token_handler(self.state)

    async def answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes,
        arrived: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[int, bytes]:  # fmt: skip
        """The reply; a detach's comes `latency` after `arrived` (loop time, wall time: when
        its request head was read), its own work included in that time."""
        url = urlsplit(target)
        path = unquote(url.path)
        if not path.startswith(PREFIX):
            return 404, b'{"detail":"Not Found"}'
        path = path[len(PREFIX) :]
        query = dict(parse_qsl(url.query))
        if path == "/calls" and method == "GET":
            part = query.get("path_contains")
            calls = [c for c in self.calls if part is None or part in c["path"]]
            return 200, json.dumps({"calls": calls}).encode()
        if path == "/calls" and method == "DELETE":
            self.calls.clear()
            return 204, b""
        request = SimpleNamespace(headers=headers, query_params=query)
        if path == "/v1/oauth/token" and method == "POST":
            reply = self.token(request, body)  # type: ignore[arg-type]
            return reply.status_code, bytes(reply.body)
        if path.startswith(DETACH) and path.endswith("/detach") and method == "PUT":
            user_id = path[len(DETACH) : -len("/detach")]
            at = datetime.fromtimestamp(arrived[1], UTC) if arrived[1] else datetime.now(UTC)
            call = {"at": at.isoformat(), "method": method, "path": path,
                    "user_id": user_id, "status": None}  # fmt: skip
            self.calls.append(call)
            reply = _change_handler(self.state, user_id, False)(request, body)  # type: ignore[arg-type]
            if self.latency:
                # The rest of the latency: COR answers `latency` after the request came, not
                # `latency` plus this server's own work.
                loop = asyncio.get_running_loop()
                due = (arrived[0] or loop.time()) + self.latency
                await (self.timer.at(due) if self.timer else asyncio.sleep(due - loop.time()))
            call["status"] = reply.status_code
            return reply.status_code, bytes(reply.body)
        return 404, b'{"detail":"Not Found"}'

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 with keep-alive, one request after another on a connection."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = (loop.time(), time.time())
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                status, payload = await self.answer(method, target, headers, body, arrived)
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\n"
                    f"connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class Timer:
    """Wakes the loop at monotonic deadlines from a thread of its own: asyncio's epoll waits
    in whole milliseconds (rounded up), which put ~0.5 ms on every 20 ms answer (8 / 20.5 ms
    is 390/s, not 400); a condition's timed wait is good to ~0.1 ms."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        threading.Thread(target=self._run, name="standin-timer", daemon=True).start()

    def at(self, due: float) -> asyncio.Future[None]:
        """A future done at `due` (loop.time(), i.e. time.monotonic())."""
        future = self._loop.create_future()
        with self._changed:
            heapq.heappush(self._due, (due, next(self._order), future))
            self._changed.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    now = time.monotonic()
                    if self._due and self._due[0][0] <= now:
                        break
                    self._changed.wait(self._due[0][0] - now if self._due else None)
                _, _, future = heapq.heappop(self._due)
            self._loop.call_soon_threadsafe(_done, future)


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _main(port: int, latency: float, users: str) -> None:
    cor = Cor(seed(users), latency, Timer(asyncio.get_running_loop()))
    server = await asyncio.start_server(cor.serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    port, latency_ms = int(sys.argv[1]), float(sys.argv[2])
    asyncio.run(_main(port, latency_ms / 1000, sys.argv[3] if len(sys.argv) > 3 else ""))


if __name__ == "__main__":
    main()
