"""The one place syncd speaks HTTP: bounded concurrency, retries, metrics.

Both API clients go through `ApiClient.request`, so every request is counted
by target, method and status, timed, and retried the same way: transient
failures (connection errors, timeouts, 429, 502, 503, 504) with exponential
backoff and jitter, honouring ``Retry-After``, within a per-request attempt
limit and a per-run retry budget; anything else (400, 401, 403, 404, 422, 500)
is returned at once for the caller to judge. Retries use tenacity rather than
a hand-written loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    wait_exponential_jitter,
)

from syncd.config import RetrySettings
from syncd.metrics import Metrics
from syncd.secrets import Secrets, cut

log = structlog.get_logger("syncd.http")

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
TRANSIENT_ERRORS = (httpx.TransportError,)  # connect, read, write, pool, timeouts, protocol
# Answers that say the server is overloaded: the concurrency limit halves. 429 is
# not one of them: it carries its own wait (Retry-After), which the retry honours.
OVERLOAD_STATUS = frozenset({500, 502, 503, 504})
# A write slower than this is a server near its limit (LiteLLM 1.110.2 runs each
# member write in a Prisma interactive transaction that expires after 5 s,
# proxy/utils.py::PrismaClient.tx), so it counts like an error for the limit.
SLOW_WRITE_SECONDS = 2.5


@dataclass
class RetryBudget:
    """Retries left for this run; shared by both targets so a flapping API cannot
    stretch one run indefinitely."""

    remaining: int

    def take(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


class AdaptiveLimit:
    """How many requests to one target may be in flight: additive increase,
    multiplicative decrease (AIMD), between 1 and `ceiling` (the configured
    concurrency, where it starts).

    Every answer the server gives within its means (any status but the overload
    ones, a write faster than `slow_seconds`) adds 1/limit, so the limit grows by
    one per round of answers; an overload (5xx, timeout or connection error, a
    slow write) halves it, once per episode: answers to requests sent before the
    last decrease were sent under the old limit and do not halve it again. 429
    changes nothing here; its Retry-After is honoured by the retry. `clock` is
    injectable so the controller is tested without waiting.
    """

    def __init__(
        self, ceiling: int, *, slow_seconds: float = SLOW_WRITE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(self.ceiling)
        self.slow_seconds = slow_seconds
        self.clock = clock
        self.on_change = on_change
        self.in_flight = 0
        self.decreased_at = float("-inf")
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    def record(self, started: float, *, overloaded: bool) -> None:
        """Adjust the limit for one answer to a request sent at `started`."""
        before = self.current
        if overloaded:
            if started <= self.decreased_at:
                return
            self.limit = max(1.0, self.limit / 2)
            self.decreased_at = self.clock()
        else:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
        if self.on_change is not None and self.current != before:
            self.on_change(self.current)

    async def acquire(self) -> float:
        """Wait for a slot; returns when the request may go (its start time)."""
        if self.in_flight < self.current and not self._waiters:
            self.in_flight += 1
            return self.clock()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # the slot came with the cancel
                self.in_flight -= 1
                self._wake()
            raise
        return self.clock()

    def release(self, started: float, overloaded: bool | None) -> None:
        """Give the slot back; `overloaded` None (a 429, a cancel) leaves the limit."""
        self.in_flight -= 1
        if overloaded is not None:
            self.record(started, overloaded=overloaded)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.current:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


class RequestCounter:
    """Requests made this run, by target and read/write, for the run summary."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, target: str, method: str) -> None:
        kind = "read" if method == "GET" else "write"
        self.counts[(target, kind)] = self.counts.get((target, kind), 0) + 1

    def total(self, target: str | None = None, kind: str | None = None) -> int:
        return sum(
            n
            for (t, k), n in self.counts.items()
            if (target is None or t == target) and (kind is None or k == kind)
        )


class ApiClient:
    """An httpx.AsyncClient for one target with a semaphore, retries and metrics."""

    def __init__(
        self,
        target: str,
        base_url: str,
        *,
        verify: bool | str,
        timeout: float,
        concurrency: int,
        retries: RetrySettings,
        budget: RetryBudget,
        metrics: Metrics,
        counter: RequestCounter,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        slow_write_seconds: float = SLOW_WRITE_SECONDS,
    ) -> None:
        """`auth` runs when a request is really sent (after its concurrency slot is
        taken, on every retry), so a token it sets is as fresh as it can be.
        `concurrency` is the ceiling of the adaptive limit (`AdaptiveLimit`)."""
        self.target = target
        _register_credentials(headers or {})
        self.client = httpx.AsyncClient(
            base_url=base_url,
            verify=verify,
            timeout=timeout,
            headers=dict(headers or {}),
            auth=auth,
            limits=httpx.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            ),
        )
        gauge = metrics.http_concurrency_limit.labels(target=target)
        self.limit = AdaptiveLimit(
            concurrency, slow_seconds=slow_write_seconds, on_change=gauge.set
        )
        gauge.set(self.limit.current)
        self.retries = retries
        self.budget = budget
        self.metrics = metrics
        self.counter = counter
        # From 0, so that the first retry after a start is not lost to increase().
        metrics.http_retries.labels(target=target)

    async def aclose(self) -> None:
        await self.client.aclose()

    def start_run(self, budget: RetryBudget, counter: RequestCounter) -> None:
        """A new run on this long-lived client: its retry budget and its request
        count start here; connections and tokens carry over."""
        self.budget = budget
        self.counter = counter

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After when the server sent one, else exponential backoff with jitter."""
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            response = outcome.result()
            header = response.headers.get("retry-after") if response is not None else None
            delay = retry_after_seconds(header)
            if delay is not None:
                return min(delay, self.retries.max_backoff_seconds)
        backoff = wait_exponential_jitter(
            multiplier=self.retries.initial_backoff_seconds,
            max=self.retries.max_backoff_seconds,
            jitter=self.retries.initial_backoff_seconds,
        )
        return float(backoff(state))

    def _should_retry(self, state: RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None:
            return False
        if outcome.failed:
            transient = isinstance(outcome.exception(), TRANSIENT_ERRORS)
        else:
            transient = outcome.result().status_code in TRANSIENT_STATUS
        # tenacity asks `retry` before `stop`: without the attempt check the last
        # attempt would spend budget and count a retry that never happens.
        if state.attempt_number >= self.retries.max_attempts:
            return False
        if not transient or not self.budget.take():
            return False
        self.metrics.http_retries.labels(target=self.target).inc()
        log.info(
            "http_retry",
            target=self.target,
            attempt=state.attempt_number,
            error=_describe_outcome(state),
        )
        return True

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> httpx.Response:
        """Send one request (retrying transient failures); raise httpx.TransportError
        when the last attempt could not reach the server at all."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries.max_attempts),
            wait=self._wait,
            retry=self._should_retry,
            retry_error_callback=_last_outcome,
        )
        result: httpx.Response = await retrying(
            self._send, method, path, params=params, json=json, headers=headers, auth=auth
        )
        return result

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | None = None,
    ) -> httpx.Response:
        started = await self.limit.acquire()
        overloaded: bool | None = None
        try:
            self.counter.add(self.target, method)
            start = time.perf_counter()
            status = "error"
            try:
                # `auth` (or the client's) runs inside this call: the token is
                # taken now, with the slot held, not when the request was queued.
                response = await self.client.request(
                    method, path, params=params, json=json, headers=headers,
                    auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                )
                status = str(response.status_code)
                code = response.status_code
                slow = method != "GET" and time.perf_counter() - start > self.limit.slow_seconds
                overloaded = None if code == 429 else code in OVERLOAD_STATUS or slow
                return response
            except TRANSIENT_ERRORS:
                overloaded = True
                raise
            except asyncio.CancelledError:
                # Cancelled by syncd itself (a concurrent read of the other side
                # failed): the target gave no answer and made no error, so counting
                # it as status="error" would page about the wrong system.
                status = ""
                raise
            finally:
                if status:
                    self.observe(method, status, time.perf_counter() - start)
        finally:
            self.limit.release(started, overloaded)

    def observe(self, method: str, status: str, seconds: float) -> None:
        """Count one finished request to this target in the request metrics; also
        used for requests another library makes to the same server (Keycloak's
        token request), so that an outage shows under the right target."""
        self.metrics.http_requests.labels(target=self.target, method=method, status=status).inc()
        self.metrics.http_duration.labels(target=self.target, method=method).observe(seconds)


async def all_or_nothing(reads: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Concurrent reads, results in order. The first failure cancels the others
    and waits for them (an `asyncio.TaskGroup`), so no request outlives a failed
    run and hits a client being closed; it is raised as itself, not wrapped,
    because callers tell a `SourceReadError` (nothing may be written) from
    other failures."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(read) for read in reads]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date
    (RFC 9110 allows both); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _last_outcome(state: RetryCallState) -> Any:
    """Out of attempts: hand back the last response, or raise the last error."""
    assert state.outcome is not None
    return state.outcome.result()


def _describe_outcome(state: RetryCallState) -> str:
    outcome = state.outcome
    if outcome is None:
        return ""
    if outcome.failed:
        exc = outcome.exception()
        return cut(f"{type(exc).__name__}: {exc}")
    return f"HTTP {outcome.result().status_code}"


def describe_transport_error(exc: BaseException) -> str:
    """A person-readable reason for a failure to reach a server (TLS, DNS, refused),
    masked and cut: a proxy's or library's message may quote a URL with credentials."""
    text = cut(str(exc) or type(exc).__name__)
    lowered = text.lower()
    if "certificate" in lowered or "ssl" in lowered:
        return f"TLS error ({text}); check verify_tls / ca_bundle"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({text})"
    return f"{type(exc).__name__}: {text}"


_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-litellm-api-key")


def _register_credentials(headers: Mapping[str, str]) -> None:
    """Register the credentials a client sends on every request (LiteLLM's key in
    ``Authorization: Bearer ...``) as secrets, so no output can repeat them."""
    for name, value in headers.items():
        if name.lower() in _CREDENTIAL_HEADERS:
            Secrets.add(value)
            scheme, _, credential = value.partition(" ")
            if credential and scheme.lower() in ("bearer", "basic"):
                Secrets.add(credential.strip())


def body_summary(response: httpx.Response) -> str:
    """What an error answer was, without quoting it ("non-JSON body of 446 bytes,
    text/html"; callers prefix "HTTP <status>: "): a body that is not the API's
    JSON (an ingress's HTML page, a proxy's text) may echo the request, headers
    and credentials included, so only its size and type are told."""
    size = len(response.content)
    kind = response.headers.get("content-type", "").split(";", 1)[0].strip() or "no type"
    return f"non-JSON body of {size} bytes, {kind}" if size else "empty body"
