"""Fault and latency injection, request counters and the write audit trail.

syncd has to survive a slow, flaky or rate-limiting proxy, and its tests have
to prove it does: retry on 429 honouring ``Retry-After``, back off on 5xx,
recover from a connection that closes without an answer. This module decides,
per request, whether to delay it and whether to answer it with an injected
fault instead of passing it to the emulated API.

Decisions come from an ordered list of ``FaultRule`` s, each scoped to a path
pattern (glob or regex) and optionally a method. Every matching rule adds its
latency; the first rule whose dice roll fires decides the fault (drop, then
429, then 5xx, then a stall). One ``random.Random`` seeded from ``FaultConfig.seed`` makes
the sequence reproducible for a given order of requests.

A rule's ``phase`` says when it strikes. ``before`` (the default): the request
never reaches the emulated API. ``after``: the API handles it (a write
commits and is audited), and only then is the answer delayed, dropped or
replaced, which is what a client sees when the proxy committed but the
connection reset or the client's timeout fired first. Retried writes meet
their own earlier success ("already exists"), and tests can prove syncd
takes that as done.

Admin endpoints (``/_emulator/...``) are never delayed, faulted or counted.
"""

from __future__ import annotations

import asyncio
import fnmatch
import random
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

ADMIN_PREFIX = "/_emulator/"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRANSPORT_SCOPE_KEY = "litellm_emulator.transport"
"""Scope key under which ``server.DroppableH11Protocol`` exposes the socket transport."""


class FaultRule(BaseModel):
    """One scoped fault. Rates are probabilities in [0, 1] per matching request."""

    path: str = "*"
    match: Literal["glob", "regex"] = "glob"
    method: str | None = None
    latency_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: Literal[500, 502, 503] = 503
    error_body: Literal["json", "html_echo"] = "json"
    """``html_echo``: the error is an HTML page echoing the request line and headers
    (``Authorization`` included), as ingress and debug error pages do; what
    syncd must never repeat in its output."""
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: int = Field(default=1, ge=0)
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    stall_rate: float = Field(default=0.0, ge=0, le=1)
    stall_ms: float = Field(default=30_000.0, ge=0)
    """A stall holds the request (phase before) or its answer (phase after) for
    ``stall_ms``, then carries on: unlike latency it is a fault, rolled per
    request and limited by ``max_faults``, so "the first answer comes after the
    client's timeout, the retry is quick" can be set up."""
    max_faults: int | None = Field(default=None, ge=0)
    """Stop injecting faults (latency still applies) after this many: "fail twice, then work"."""
    phase: Literal["before", "after"] = "before"
    """``before``: the fault replaces the request, which never reaches the API.
    ``after``: the request is handled (a write commits and is audited), then its
    latency delays the answer and its fault replaces it: the lost answer of a
    proxy that committed before the connection reset or the client timed out."""

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else None

    @field_validator("path")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("path pattern must not be empty")
        return value

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        if self.match == "regex":
            return re.search(self.path, path) is not None
        return fnmatch.fnmatchcase(path, self.path)


class FaultConfig(BaseModel):
    """The whole fault setup; ``PUT /_emulator/faults`` replaces it and reseeds."""

    seed: int | None = None
    rules: list[FaultRule] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _regexes_compile(cls, rules: list[FaultRule]) -> list[FaultRule]:
        for rule in rules:
            if rule.match == "regex":
                re.compile(rule.path)
        return rules


FaultAction = Literal["drop", "rate_limit", "error", "stall"]


@dataclass(frozen=True)
class FaultDecision:
    latency_s: float = 0.0  # before the request reaches the API
    action: FaultAction | None = None
    status: int = 200
    retry_after_s: int = 0
    rule_index: int | None = None
    after_latency_s: float = 0.0  # after the API answered, before the answer is sent
    after: bool = False  # the fault replaces the API's answer instead of the request
    stall_s: float = 0.0
    error_body: str = "json"

    @property
    def touches_answer(self) -> bool:
        return self.after_latency_s > 0 or (self.action is not None and self.after)


class FaultInjector:
    """Holds the active ``FaultConfig`` and rolls the dice for each request."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._rng = random.Random()
        self._fired: list[int] = []
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config.model_copy(deep=True)
            self._rng = random.Random(config.seed)
            self._fired = [0] * len(config.rules)

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return self._config.model_copy(deep=True)

    def fired_counts(self) -> list[int]:
        with self._lock:
            return list(self._fired)

    def decide(self, method: str, path: str) -> FaultDecision:
        latency_ms = {"before": 0.0, "after": 0.0}
        with self._lock:
            chosen: tuple[FaultAction, int, FaultRule] | None = None
            for index, rule in enumerate(self._config.rules):
                if not rule.matches(method, path):
                    continue
                latency_ms[rule.phase] += rule.latency_ms
                if rule.jitter_ms:
                    latency_ms[rule.phase] += self._rng.uniform(0.0, rule.jitter_ms)
                if chosen is not None:
                    continue
                if rule.max_faults is not None and self._fired[index] >= rule.max_faults:
                    continue
                action: FaultAction | None = None
                if rule.drop_rate and self._rng.random() < rule.drop_rate:
                    action = "drop"
                elif rule.rate_limit_rate and self._rng.random() < rule.rate_limit_rate:
                    action = "rate_limit"
                elif rule.error_rate and self._rng.random() < rule.error_rate:
                    action = "error"
                elif rule.stall_rate and self._rng.random() < rule.stall_rate:
                    action = "stall"
                if action is not None:
                    self._fired[index] += 1
                    chosen = (action, index, rule)
        before, after = latency_ms["before"] / 1000.0, latency_ms["after"] / 1000.0
        if chosen is None:
            return FaultDecision(latency_s=before, after_latency_s=after)
        action, index, rule = chosen
        status = {"drop": 0, "rate_limit": 429, "error": rule.error_status, "stall": 200}[action]
        return FaultDecision(
            latency_s=before,
            action=action,
            status=status,
            retry_after_s=rule.retry_after_s,
            rule_index=index,
            after_latency_s=after,
            after=rule.phase == "after",
            stall_s=rule.stall_ms / 1000.0,
            error_body=rule.error_body,
        )


@dataclass
class PathCounter:
    reads: int = 0
    writes: int = 0


@dataclass
class Counters:
    """Requests received per path, reads and writes apart, plus injected faults by kind."""

    paths: dict[str, PathCounter] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str, path: str) -> None:
        with self.lock:
            counter = self.paths.setdefault(path, PathCounter())
            if method.upper() in READ_METHODS:
                counter.reads += 1
            else:
                counter.writes += 1

    def count_fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def reset(self) -> None:
        with self.lock:
            self.paths.clear()
            self.faults.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            paths = {
                p: {"reads": c.reads, "writes": c.writes} for p, c in sorted(self.paths.items())
            }
            return {
                "paths": paths,
                "total": {
                    "reads": sum(c.reads for c in self.paths.values()),
                    "writes": sum(c.writes for c in self.paths.values()),
                },
                "faults": dict(self.faults),
            }


@dataclass(frozen=True)
class WriteRecord:
    method: str
    path: str
    query: str
    status: int
    changed_by: str | None


class EmulatorMiddleware:
    """Pure ASGI middleware: count, delay/fault, then record writes that reached the API.

    It sits outside FastAPI's exception handling so an injected fault never
    touches the emulated state and a dropped connection is really dropped.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        injector: FaultInjector,
        counters: Counters,
        record_write: Callable[[WriteRecord], None],
    ) -> None:
        self.app = app
        self.injector = injector
        self.counters = counters
        self.record_write = record_write

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        method = str(scope["method"]).upper()
        path = str(scope["path"])
        self.counters.count(method, path)
        decision = self.injector.decide(method, path)
        if decision.latency_s > 0:
            self.counters.count_fault("latency")
            await asyncio.sleep(decision.latency_s)
        if decision.action == "stall" and not decision.after:
            self.counters.count_fault("stalled")
            await asyncio.sleep(decision.stall_s)  # then the request goes on, late
        elif decision.action is not None and not decision.after:
            await self._inject(decision, scope, send)
            return

        status_holder: dict[str, int] = {}
        held: list[Message] | None = [] if decision.touches_answer else None

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = int(message["status"])
            if held is not None:  # an "after" fault: the answer waits, or never leaves
                held.append(message)
                return
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if method not in READ_METHODS and "status" in status_holder:
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
                }
                self.record_write(
                    WriteRecord(
                        method=method,
                        path=path,
                        query=scope.get("query_string", b"").decode("latin-1"),
                        status=status_holder["status"],
                        changed_by=headers.get("litellm-changed-by"),
                    )
                )
        if held is None:
            return
        if decision.after_latency_s > 0:
            self.counters.count_fault("latency_after")
            await asyncio.sleep(decision.after_latency_s)
        if decision.action == "stall":
            self.counters.count_fault("stalled_after")
            await asyncio.sleep(decision.stall_s)  # then the answer goes out, late
        elif decision.action is not None:
            await self._inject(decision, scope, send, suffix="_after")
            return
        for message in held:
            await send(message)

    async def _inject(
        self, decision: FaultDecision, scope: Scope, send: Send, suffix: str = ""
    ) -> None:
        """Answer with the decided fault instead of the API's answer (counted as
        ``dropped``/``429``/``<status>``, with ``_after`` for the after phase)."""
        if decision.action == "drop":
            self.counters.count_fault("dropped" + suffix)
            await self._drop(scope)
            return
        if decision.action == "rate_limit":
            self.counters.count_fault("429" + suffix)
            await _send_json(
                send,
                429,
                {
                    "error": {
                        "message": "Emulator injected rate limit. Retry after "
                        f"{decision.retry_after_s}s.",
                        "type": "rate_limit_error",
                        "param": None,
                        "code": "429",
                    }
                },
                [(b"retry-after", str(decision.retry_after_s).encode())],
            )
            return
        if decision.action == "error" and decision.error_body == "html_echo":
            self.counters.count_fault(str(decision.status) + suffix)
            await _send_html_echo(send, decision.status, scope)
            return
        if decision.action == "error":
            self.counters.count_fault(str(decision.status) + suffix)
            await _send_json(
                send,
                decision.status,
                {
                    "error": {
                        "message": f"Emulator injected fault ({decision.status}).",
                        "type": "internal_server_error",
                        "param": None,
                        "code": str(decision.status),
                    }
                },
                [],
            )

    async def _drop(self, scope: Scope) -> None:
        """Close the socket without writing a byte, as a crashed proxy or LB would.

        Needs the transport that ``server.DroppableH11Protocol`` puts in the
        scope; under any other server the best available is an aborted
        response, which clients also see as a protocol error.
        """
        transport = scope.get(TRANSPORT_SCOPE_KEY)
        if transport is None:
            raise ConnectionAbortedError("emulator: injected dropped connection")
        transport.abort()
        # Let connection_lost run so uvicorn marks the cycle disconnected and
        # does not try to answer on the dead socket.
        for _ in range(3):
            await asyncio.sleep(0)


async def _send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    import json

    await _send_fault(send, status, json.dumps(body).encode(), b"application/json", headers)


async def _send_html_echo(send: Send, status: int, scope: Scope) -> None:
    """An HTML error page that repeats the request, headers and all."""
    from html import escape

    lines = [f"{scope['method']} {scope['path']}"] + [
        f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in scope["headers"]
    ]
    payload = (
        f"<html><body><h1>{status} Internal Server Error</h1><pre>"
        f"{escape(chr(10).join(lines))}</pre></body></html>"
    ).encode()
    await _send_fault(send, status, payload, b"text/html; charset=utf-8")


async def _send_fault(
    send: Send, status: int, payload: bytes, content_type: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """One faulted answer, marked as such for tests that tell it from a real one."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(payload)).encode()),
                (b"x-litellm-emulator-fault", b"1"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
