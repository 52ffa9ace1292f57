"""The COR client's lean transport against a real HTTP/1.1 server on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.http.transport import Direct, LeanTransport, cor_transport

Reply = Callable[[int, bytes], Awaitable[bytes | None]]  # (request number, head) -> answer


class Server:
    """Answers each request with `reply(n, head)`; None means close the connection instead."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests = 0
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests += 1
                answer = await self.reply(self.requests, head + body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"content-type: application/json", *extra]
    return b"\r\n".join([*head, b"content-length: %d" % len(body), b"", body])


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Reply], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> Server:
        server = Server(reply)
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        servers.append(listening)
        server.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
        return server

    yield start
    for listening in servers:
        listening.close()


async def test_requests_share_one_kept_alive_connection_and_bodies_arrive(serve):
    async def reply(n: int, request: bytes) -> bytes:
        assert request.startswith(b"PUT /users/a%40b/detach HTTP/1.1\r\n")
        assert b'{"workspaces":["WS-1"]}' in request.replace(b" ", b"")
        return ok(b'{"n": %d}' % n)

    server = await serve(reply)
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as http:
        for n in (1, 2, 3):
            url = server.url + "/users/a%40b/detach"
            answer = await http.put(url, json={"workspaces": ["WS-1"]})
            assert (answer.status_code, answer.json()) == (200, {"n": n})
    assert server.connections == 1


async def test_a_connection_the_server_closed_is_replaced_and_the_request_sent_again(serve):
    async def reply(n: int, request: bytes) -> bytes | None:
        return None if n == 2 else ok(b"{}")  # the second request finds the connection gone

    server = await serve(reply)
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as http:
        assert (await http.get(server.url + "/a")).status_code == 200
        assert (await http.get(server.url + "/b")).status_code == 200
    assert (server.connections, server.requests) == (2, 3)


async def test_chunked_answers_and_connection_close_are_understood(serve):
    async def reply(n: int, request: bytes) -> bytes:
        chunked = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n"
        return chunked + b"retry-after: 7\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"

    server = await serve(reply)
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as http:
        for _ in range(2):
            answer = await http.get(server.url + "/x")
            assert (answer.status_code, answer.text, answer.headers["retry-after"]) == (
                503, "abc", "7",
            )  # fmt: skip
    assert server.connections == 2


async def test_timeouts_and_refused_connections_are_httpx_errors(serve):
    async def slow(n: int, request: bytes) -> bytes:
        await asyncio.sleep(5)
        return ok(b"{}")

    server = await serve(slow)
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url + "/slow")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/nobody")


async def test_garbage_from_the_server_is_a_protocol_error(serve):
    async def garbage(n: int, request: bytes) -> bytes:
        return b"this is not HTTP\r\n\r\n"

    server = await serve(garbage)
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url + "/x")


async def test_direct_sends_with_the_clients_headers_and_timeout_and_reads_the_answer(serve):
    heads: list[bytes] = []

    async def reply(n: int, request: bytes) -> bytes:
        heads.append(request)
        if n == 2:
            await asyncio.sleep(5)
        return ok(b'{"workspaces": []}')

    server = await serve(reply)
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport, timeout=0.3) as http:
        direct = Direct(http, transport)
        headers = {"Authorization": "Bearer t"}
        answer = await direct.request("PUT", server.url + "/u/a%40b/detach", headers=headers,
                                      json={"workspaces": ["WS-1"]})  # fmt: skip
        assert (answer.status_code, answer.json()) == (200, {"workspaces": []})
        assert answer.request.url == server.url + "/u/a%40b/detach"
        with pytest.raises(httpx.ReadTimeout):  # the client's timeout
            await direct.request("PUT", server.url + "/slow", json={})
    head = heads[0].lower()
    assert head.startswith(b"put /u/a%40b/detach http/1.1\r\n")
    for line in (b"authorization: bearer t", b"user-agent: python-httpx/",
                 b"content-type: application/json", b"content-length: 23"):  # fmt: skip
        assert b"\r\n" + line in head
    assert heads[0].endswith(b'{"workspaces":["WS-1"]}')


def _certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cor-bridge test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_verifies_the_servers_certificate(tmp_path: Path):
    """COR is https: the transport speaks TLS, checks the certificate against the trusted
    ones (and the address it names), and refuses a server it cannot verify."""
    cert_file, key_file = _certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)
    server = Server(lambda n, request: _answer(ok(b'{"tls": true}')))
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=server_tls)
    url = f"https://127.0.0.1:{listening.sockets[0].getsockname()[1]}/v2/x"
    try:
        trusting = ssl.create_default_context(cafile=str(cert_file))
        async with httpx.AsyncClient(transport=LeanTransport(verify=trusting), timeout=5) as http:
            for _ in range(2):
                answer = await http.get(url)
                assert (answer.status_code, answer.json()) == (200, {"tls": True})
        assert server.connections == 1  # kept alive over TLS too
        async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(url)  # the default trust store does not know it
    finally:
        listening.close()


async def _answer(reply: bytes) -> bytes:
    return reply


def test_a_proxy_in_the_environment_keeps_httpx_own_transport(monkeypatch):
    """httpx mounts HTTP(S)_PROXY only on its own transport: with a proxy for COR's host the
    lean one is not used; NO_PROXY naming the host, or no proxy at all, it is."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert isinstance(cor_transport("https://api.cor.example/v2"), LeanTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert cor_transport("https://api.cor.example/v2") is None
    monkeypatch.setenv("NO_PROXY", "api.cor.example")
    assert isinstance(cor_transport("https://api.cor.example/v2"), LeanTransport)


async def test_direct_lets_a_calls_header_replace_a_default_and_closes_a_failed_answer():
    seen: list[httpx.Request] = []
    closed: list[bool] = []

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"work'
            raise httpx.ReadError("connection reset")

        async def aclose(self) -> None:
            closed.append(True)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/broken":
            return httpx.Response(200, stream=Broken())
        return httpx.Response(200, json={})

    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(transport=transport, headers={"X-Who": "bridge"}) as http:
        direct = Direct(http, transport)
        await direct.request("PUT", "http://cor.test/ok", headers={"x-who": "caller"})
        with pytest.raises(httpx.ReadError):
            await direct.request("PUT", "http://cor.test/broken")
    assert seen[0].headers.get_list("X-Who") == ["caller"]
    assert closed == [True]
