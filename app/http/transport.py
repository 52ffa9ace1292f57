"""A lean HTTP/1.1 transport for httpx: keep-alive connections on asyncio streams, parsed by h11.

The COR client sends hundreds of small requests a second over a few keep-alive connections.
httpx's default transport (httpcore) costs ~2 ms of CPU a request on the benchmark machine:
it polls every pooled connection's socket before each request and writes the request line,
headers and body in separate sends. This one keeps the httpx API (an `AsyncClient` takes it
as `transport=`; timeouts, errors and responses are httpx's) and does per request one write,
one or a few reads, and no poll: a connection the server closed is seen by the stream (EOF)
before it is reused.

Only what the bridge's clients need: http and https origins, no HTTP/2, bodies read whole,
no proxies: httpx uses the environment's proxies only with its own transport, so
`cor_transport` gives this one only when no proxy applies to COR's address. A request whose
reused connection ends before any byte of the answer is sent once more on a fresh one
(httpcore reports it instead): the COR calls are idempotent (a detach, a token).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import Callable
from typing import Any

import h11
import httpx

READ_SIZE = 65536

Origin = tuple[str, str, int]


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class _StaleError(Exception):
    """A reused connection failed before any byte of the answer came: send again."""


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive, up to `max_keepalive` idle connections per origin."""

    def __init__(self, *, max_keepalive: int = 20, verify: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_keepalive = max_keepalive
        self._ssl = verify

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        while True:
            conn, reused = self._take(origin), True
            if conn is None:
                conn, reused = await self._connect(origin, timeouts.get("connect")), False
            try:
                return await self._exchange(conn, origin, request, body, timeouts, reused)
            except _StaleError:
                continue

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            context = self._ssl
        with _Mapped(httpx.ConnectTimeout, httpx.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, limit=READ_SIZE
                )
        return _Connection(reader, writer)

    async def _exchange(
        self,
        conn: _Connection,
        origin: Origin,
        request: httpx.Request,
        body: bytes,
        timeouts: dict[str, float | None],
        reused: bool,
    ) -> httpx.Response:
        got_any = False
        try:
            headers = [(b"host", request.url.netloc)]
            headers += [(k, v) for k, v in request.headers.raw if k.lower() != b"host"]
            target = request.url.raw_path
            data = conn.h11.send(h11.Request(method=request.method, target=target, headers=headers))
            if body:
                data = (data or b"") + (conn.h11.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (conn.h11.send(h11.EndOfMessage()) or b"")
            with _Mapped(httpx.WriteTimeout, httpx.WriteError):
                conn.writer.write(data)
                async with asyncio.timeout(timeouts.get("write")):
                    await conn.writer.drain()
            response: h11.Response | None = None
            chunks: list[bytes] = []
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    with _Mapped(httpx.ReadTimeout, httpx.ReadError):
                        async with asyncio.timeout(timeouts.get("read")):
                            received = await conn.reader.read(READ_SIZE)
                    if not received and not got_any and reused:
                        raise _StaleError
                    got_any = True
                    conn.h11.receive_data(received)
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        except _StaleError:
            conn.close()
            raise
        except (h11.RemoteProtocolError, h11.LocalProtocolError) as exc:
            conn.close()
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except httpx.TransportError as exc:
            conn.close()
            if reused and not got_any and isinstance(exc, httpx.WriteError | httpx.ReadError):
                raise _StaleError from exc
            exc.request = request
            raise
        except BaseException:  # cancelled mid-request: the connection is in no known state
            conn.close()
            raise
        if response is None:
            conn.close()
            raise httpx.RemoteProtocolError("the server closed without answering", request=request)
        self._put_back(conn, origin)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=b"".join(chunks),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": bytes(response.reason)},
        )

    def _put_back(self, conn: _Connection, origin: Origin) -> None:
        idle = self._idle.setdefault(origin, [])
        done = conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE
        if done and len(idle) < self._max_keepalive:
            conn.h11.start_next_cycle()
            idle.append(conn)
            return
        conn.close()


class _Mapped:
    """asyncio's timeout and OSError as httpx's exceptions of one phase (connect, read, ...)."""

    def __init__(self, timeout: Callable[..., Exception], error: Callable[..., Exception]) -> None:
        self._timeout = timeout
        self._error = error

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if isinstance(exc, TimeoutError):
            raise self._timeout(f"{type(exc).__name__}") from exc
        if isinstance(exc, OSError | EOFError | asyncio.IncompleteReadError):
            raise self._error(f"{type(exc).__name__}: {exc}") from exc


class Direct:
    """Requests sent straight through a transport, without httpx's client layer (its cookie
    jar, auth and redirect wrappers, event hooks: none of which an API of plain JSON requests
    with a bearer header uses): the client's default headers and timeouts, an httpx Request
    in, an httpx Response (read whole) out, httpx's errors."""

    def __init__(self, client: httpx.AsyncClient, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport
        self._headers = client.headers
        self._timeout = client.timeout.as_dict()

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, json: Any = None
    ) -> httpx.Response:
        merged = httpx.Headers(self._headers)
        merged.update(headers or {})  # as the client does: a call's header replaces a default
        request = httpx.Request(
            method, url, headers=merged, json=json, extensions={"timeout": self._timeout}
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        except BaseException:
            await response.aclose()  # a streamed body's connection goes back, or is dropped
            raise
        return response


def cor_transport(url: str) -> httpx.AsyncBaseTransport | None:
    """The lean transport for `url`, or None (httpx's own, which mounts the environment's
    proxies: HTTP(S)_PROXY, ALL_PROXY, NO_PROXY) when a proxy applies to its host."""
    proxies = urllib.request.getproxies()
    host = httpx.URL(url).host
    if any(p in proxies for p in ("http", "https", "all")) and not urllib.request.proxy_bypass(
        host
    ):
        return None
    return LeanTransport()
