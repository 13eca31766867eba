"""The daemon's endpoints, served on its event loop, with the real `Service` in this
process and nothing to sync against (Keycloak and LiteLLM are unreachable, so
every run fails fast; the endpoints do not care).

The service runs on the main thread, as in the daemon (it installs signal
handlers, which only the main thread may); each test's client runs in a worker
thread, so that it can block the service's loop from outside and watch.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from syncd.config import Settings
from syncd.service import Service

Check = Callable[[asyncio.AbstractEventLoop, str, int], None]


def settings(host: str = "127.0.0.1") -> Settings:
    return Settings(
        keycloak={"url": "http://127.0.0.1:9", "realm": "r", "client_id": "c",
                  "client_secret": "s"},
        litellm={"url": "http://127.0.0.1:9", "api_key": "k"},
        server={"host": host, "port": 0},
        schedule={"interval_seconds": 3600, "jitter_seconds": 0,
                  "shutdown_timeout_seconds": 10},
        retries={"max_attempts": 1},
    )


def with_service(check: Check, host: str = "127.0.0.1") -> None:
    """Run the service until `check(loop, host, port)` (in a thread) returns, then stop
    it the way SIGTERM does and expect a clean exit."""

    async def main() -> None:
        service = Service(settings(host))
        task = asyncio.create_task(service.run())
        while service.address is None:
            assert not task.done(), f"service ended early: {task.result()}"
            await asyncio.sleep(0.01)
        try:
            await asyncio.to_thread(check, asyncio.get_running_loop(), host, service.address[1])
        finally:
            service.stop()
            assert await asyncio.wait_for(task, 30) == 0

    asyncio.run(main())


def url(host: str, port: int, path: str) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"


def test_a_stalled_event_loop_fails_the_liveness_probe() -> None:
    """While the loop is blocked, /healthz answers nothing, so the probe times out.

    The kubelet counts a probe that gets no answer within ``timeoutSeconds`` as a
    failed probe, exactly like a 503: a daemon whose loop is stuck is restarted
    without the loop having to report on itself. Once the loop runs again, so does
    the probe.
    """

    def check(loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        healthz = url(host, port, "/healthz")
        with httpx.Client(timeout=1.0) as client:
            assert client.get(healthz).status_code == 200
            loop.call_soon_threadsafe(time.sleep, 3.0)  # a stuck loop, as a bug would make it
            started = time.monotonic()
            with pytest.raises(httpx.TimeoutException):
                client.get(healthz)
            assert time.monotonic() - started < 2.5  # it was the timeout, not a late answer
            response = client.get(healthz, timeout=10.0)
            assert response.status_code == 200 and response.json()["status"] == "ok"
            assert "loop_lag_seconds" not in response.json()

    with_service(check)


def exchange(sock: socket.socket, request: bytes, *, head: bool = False) -> tuple[
    int, dict[str, str], bytes
]:
    """Send one request, read one response (Content-Length framed)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response head: {data!r}"
        data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = 0 if head else int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the body"
        body += chunk
    assert status_line.startswith("HTTP/1.1 ")
    return int(status_line.split()[1]), headers, body


def closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    return sock.recv(1) == b""


def test_http_responder() -> None:
    """Keep-alive for scrapers, Connection: close for probes, 400 for nonsense; and
    nothing a client sends stops the endpoints from answering the next one."""

    def check(loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        def connect() -> socket.socket:
            return socket.create_connection((host, port), timeout=5)

        with connect() as sock:  # two requests on one connection
            status, headers, body = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 200 and b'"status": "ok"' in body
            assert headers["content-type"] == "application/json"
            status, headers, body = exchange(
                sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"
            )
            assert status == 200 and b"syncd_ready 0.0" in body
            assert headers["content-type"].startswith("text/plain")
            status, _, body = exchange(sock, b"GET /readyz?verbose HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 503 and b"not ready: no successful sync yet" in body
            status, headers, body = exchange(
                sock, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", head=True
            )
            assert status == 200 and int(headers["content-length"]) > 0 and body == b""
            status, _, _ = exchange(sock, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 404
            status, headers, _ = exchange(sock, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert status == 200 and headers["connection"] == "close"
            assert closed(sock)

        with connect() as sock:  # HTTP/1.0: one answer, then closed
            status, headers, _ = exchange(sock, b"GET /healthz HTTP/1.0\r\n\r\n")
            assert status == 200 and headers["connection"] == "close" and closed(sock)

        with connect() as sock:
            status, headers, _ = exchange(sock, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 405 and headers["allow"] == "GET, HEAD"

        with connect() as sock:  # a body is never read: answered, then closed
            status, headers, _ = exchange(
                sock, b"GET /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
            )
            assert status == 200 and headers["connection"] == "close" and closed(sock)

        for nonsense in (
            b"hello\r\n\r\n",
            b"GET /healthz SPDY/3\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ):
            with connect() as sock:
                status, headers, body = exchange(sock, nonsense)
                assert status == 400 and body.startswith(b"bad request"), nonsense[:40]
                assert headers["connection"] == "close" and closed(sock)

        with connect() as sock:  # longer than a line may be: 400, or a reset if the
            # rest of the line arrives after the server closed the connection
            try:
                status, _, _ = exchange(sock, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
                assert status == 400
            except ConnectionResetError:
                pass

        with connect() as sock:  # a client that vanishes mid-request
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        with httpx.Client(timeout=5) as client:
            assert client.get(url(host, port, "/healthz")).status_code == 200

    with_service(check)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_host() -> None:
    def check(loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        with httpx.Client(timeout=5) as client:
            assert client.get(url(host, port, "/healthz")).status_code == 200

    with_service(check, host="::1")
