"""Running the emulator in a thread (``EmulatorServer``) or a child process (``EmulatorProcess``).

Both serve real HTTP on 127.0.0.1, so syncd's own httpx client is exercised
exactly as against a real proxy. The socket is bound before uvicorn starts
(port 0 picks a free port) so there is no race between choosing a port and
listening on it.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from devtools.litellm_emulator.app import create_app
from devtools.litellm_emulator.core import EmulatorSettings
from devtools.litellm_emulator.faults import TRANSPORT_SCOPE_KEY, Receive, Scope, Send

READY_PREFIX = "LITELLM_EMULATOR_READY"
"""First line the CLI prints once it accepts connections: ``LITELLM_EMULATOR_READY url=http://...``."""


class DroppableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that exposes its transport in the ASGI scope.

    Needed to inject a *dropped connection*: the fault middleware aborts the
    socket before a single byte of the response is written, which no ASGI
    message can express.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app_with_transport(scope: Scope, receive: Receive, send: Send) -> None:
            scope[TRANSPORT_SCOPE_KEY] = self.transport
            await inner(scope, receive, send)

        self.app = app_with_transport


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted
    # sockets whose proto says TCP, and without it Nagle + delayed ACK add
    # ~40 ms to every keep-alive request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(settings: EmulatorSettings, *, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        http=DroppableH11Protocol,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=1,
    )


class EmulatorServer:
    """The emulator on a free loopback port, served from a daemon thread.

    ``start()`` returns once the port accepts connections; ``url`` and
    ``master_key`` are what a client needs. ``app`` gives in-process access to
    the emulator object for debugging (tests should prefer the HTTP admin API).
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.host = host
        self._requested_port = port
        self._config = uvicorn_config(self.settings, log_level=log_level)
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def master_key(self) -> str:
        return self.settings.master_key

    @property
    def app(self) -> Any:
        return self._config.app

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        if self._thread is not None:
            return self
        self._socket = _bind(self.host, self._requested_port)
        self.port = int(self._socket.getsockname()[1])
        sockets = [self._socket]

        def run() -> None:
            asyncio.run(self._server.serve(sockets=sockets))

        self._thread = threading.Thread(
            target=run, name=f"litellm-emulator:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("litellm emulator did not start")
            time.sleep(0.01)
        warm_up(self.url, self.master_key)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmulatorProcess:
    """The emulator as a child process (``python -m devtools.litellm_emulator``).

    For the demo and benchmarks, where the emulator must not share the GIL or
    event loop with the code under test. ``args`` are extra CLI flags.
    """

    def __init__(
        self, master_key: str = "sk-emulator-master-key", args: list[str] | None = None
    ) -> None:
        self.master_key = master_key
        self.args = list(args or [])
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> EmulatorProcess:
        repo_root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(repo_root), env.get("PYTHONPATH", "")])
        )
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.litellm_emulator",
                "--port",
                "0",
                "--master-key",
                self.master_key,
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=str(repo_root),
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        result: dict[str, str] = {}

        def read_ready() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for line in self._proc.stdout:
                match = re.match(rf"{READY_PREFIX} url=(\S+)", line)
                if match:
                    result["url"] = match.group(1)
                    return

        reader = threading.Thread(target=read_ready, daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        if "url" not in result:
            self.stop()
            raise RuntimeError("litellm emulator process did not report ready")
        self.url = result["url"]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_WARM_UP_CALLS: tuple[tuple[str, str, dict[str, object] | None], ...] = (
    (
        "POST",
        "/team/new",
        {"team_id": "warm-up", "members_with_roles": [{"user_id": "w", "role": "user"}]},
    ),
    ("POST", "/team/update", {"team_id": "warm-up"}),
    ("PATCH", "/team/warm-up", {"metadata": {}}),
    (
        "POST",
        "/team/member_add",
        {"team_id": "warm-up", "member": {"user_id": "w2", "role": "user"}},
    ),
    ("POST", "/team/member_update", {"team_id": "warm-up", "user_id": "w2", "role": "user"}),
    ("POST", "/team/member_delete", {"team_id": "warm-up", "user_id": "w2"}),
    ("GET", "/team/info?team_id=warm-up", None),
    ("GET", "/team/list", None),
    ("GET", "/v2/team/list", None),
    ("POST", "/user/new", {"user_id": "warm-up-user"}),
    ("POST", "/user/update", {"user_id": "warm-up-user", "user_alias": "w"}),
    ("GET", "/user/info?user_id=warm-up-user", None),
    ("GET", "/user/list", None),
    ("POST", "/key/generate", {"key": "sk-warm-up-key-00000", "key_alias": "warm-up"}),
    ("POST", "/key/update", {"key": "sk-warm-up-key-00000", "metadata": {}}),
    ("GET", "/key/info?key=sk-warm-up-key-00000", None),
    ("GET", "/key/list?return_full_object=true", None),
    ("POST", "/key/block", {"key": "sk-warm-up-key-00000"}),
    ("POST", "/key/unblock", {"key": "sk-warm-up-key-00000"}),
    ("POST", "/key/delete", {"keys": ["sk-warm-up-key-00000"]}),
    ("POST", "/team/block", {"team_id": "warm-up"}),
    ("POST", "/team/unblock", {"team_id": "warm-up"}),
    ("GET", "/v1/models", None),
    ("POST", "/chat/completions", {"model": "warm-up", "messages": []}),
    ("POST", "/user/delete", {"user_ids": ["warm-up-user"]}),
    ("POST", "/team/delete", {"team_ids": ["warm-up"]}),
)


def warm_up(url: str, master_key: str) -> None:
    """Call every route once, then reset, so FastAPI builds LiteLLM's models up front.

    Building them emits a harmless pydantic ``UserWarning`` (see
    ``core.PYDANTIC_ALIAS_WARNING``) from the server thread; warnings filters
    are process-wide, so without this it would land in whatever test made the
    first call to a route. Start-up faults are off during the warm-up.
    """
    headers = {"Authorization": f"Bearer {master_key}"}
    with (
        warnings.catch_warnings(),
        httpx.Client(base_url=url, headers=headers, timeout=10) as client,
    ):
        warnings.simplefilter("ignore")
        client.put("/_emulator/faults", json={"rules": []})
        for method, path, body in _WARM_UP_CALLS:
            client.request(method, path, json=body)
        client.post("/_emulator/reset")  # also restores the start-up faults


def serve_forever(settings: EmulatorSettings, *, host: str, port: int, log_level: str) -> None:
    """Blocking serve for the CLI; prints the ready line once listening."""
    sock = _bind(host, port)
    actual_port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn_config(settings, log_level=log_level))

    async def main() -> None:
        serve = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serve.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(f"{READY_PREFIX} url=http://{host}:{actual_port}", flush=True)
        await serve

    try:
        asyncio.run(main())
    finally:
        sock.close()


__all__ = [
    "READY_PREFIX",
    "DroppableH11Protocol",
    "EmulatorProcess",
    "EmulatorServer",
    "serve_forever",
]
