"""The long-running daemon: scheduled syncs, /metrics, /healthz, /readyz, signals.

    syncd [--config FILE]

Life cycle
    A full sync runs at start, then on the schedule: every
    ``schedule.interval_seconds`` or, when set, at the times of the crontab
    expression ``schedule.cron`` (evaluated in UTC); each scheduled time is
    pushed back by a random 0..``schedule.jitter_seconds`` so that replicas or
    neighbouring cron jobs do not hit Keycloak at the same instant.

    Runs never overlap. A scheduled time that comes while the previous run is
    still going is skipped and counted in ``syncd_run_overruns_total``; the
    next run starts at the first scheduled time after the long run ended.

    SIGTERM or SIGINT: no new run starts, the run in flight is allowed to
    finish (at most ``schedule.shutdown_timeout_seconds``, then it is
    cancelled), the HTTP server stops, and the process exits 0. A second
    signal cancels the run in flight at once.

HTTP (one port, ``server.host``:``server.port``, served on the event loop itself)
    ``/metrics``  Prometheus exposition of the daemon's registry.
    ``/healthz``  liveness: 200 while the scheduler runs; 503 when it stopped. A
                  stalled event loop answers nothing at all, and the kubelet
                  counts a probe that times out as failed.
    ``/readyz``   readiness: 200 once a run succeeded, unless the last
                  ``readiness.max_consecutive_failures`` runs all failed or the
                  last success is older than ``readiness.max_success_age_seconds``.

The endpoints are a small HTTP/1.1 responder on ``asyncio.start_server`` (GET
and HEAD, keep-alive, 400 for what it cannot parse) rather than a web framework:
three fixed routes do not justify a runtime dependency, and answering from the
loop that runs the syncs is what makes the liveness probe honest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import Gauge
from prometheus_client.exposition import choose_encoder

from syncd.config import ReadinessSettings, ScheduleSettings, Settings
from syncd.errors import BadHttpRequest, EventsUnavailable, ExitCode, RunResult
from syncd.follower import EventFollower
from syncd.metrics import Metrics
from syncd.reconciler import Clients, Reconciler
from syncd.requests import RequestQueue
from syncd.worker import Worker

log = structlog.get_logger("syncd.service")

JOB_ID = "sync"


# --------------------------------------------------------------------------- schedule


def build_trigger(schedule: ScheduleSettings) -> BaseTrigger:
    """The APScheduler trigger for ``schedule``."""
    jitter = schedule.jitter_seconds or None  # each fire time + uniform(0, jitter) seconds
    if schedule.cron:  # validated when the configuration was loaded
        trigger = CronTrigger.from_crontab(schedule.cron, timezone=UTC)
        trigger.jitter = jitter
        return trigger
    return IntervalTrigger(seconds=schedule.interval_seconds, timezone=UTC, jitter=jitter)


def describe_schedule(schedule: ScheduleSettings) -> str:
    base = f"cron {schedule.cron!r} (UTC)" if schedule.cron else (
        f"every {schedule.interval_seconds:g}s"
    )
    return f"{base}, jitter up to {schedule.jitter_seconds:g}s"


# --------------------------------------------------------------------------- health


Probe = tuple[bool, dict[str, Any]]


@dataclass
class Health:
    """What /healthz and /readyz report. Only the event loop writes it and only the
    event loop reads it (the endpoints are served there), so it needs no lock."""

    readiness: ReadinessSettings
    scheduler_running: bool = False
    stopping: bool = False
    next_run: datetime | None = None
    runs: int = 0
    last_result: RunResult | None = None
    last_success_wall: float | None = None
    last_success_mono: float | None = None
    consecutive_failures: int = 0
    running_since: float | None = None

    def scheduler_seen(self, running: bool, next_run: datetime | None) -> None:
        self.scheduler_running = running
        self.next_run = next_run

    def run_started(self) -> None:
        self.running_since = time.monotonic()

    def run_ended(self, result: RunResult) -> None:
        self.running_since = None
        self.runs += 1
        self.last_result = result
        if result is RunResult.SUCCESS:
            self.last_success_wall = time.time()
            self.last_success_mono = time.monotonic()
            self.consecutive_failures = 0
        elif result.failed:
            self.consecutive_failures += 1

    def success_confirmed(self) -> None:
        """Nothing changed since the last success (the event tail saw nothing and
        nothing waits): that success is as good as new."""
        if self.last_result is RunResult.SUCCESS:
            self.last_success_wall = time.time()
            self.last_success_mono = time.monotonic()

    def liveness(self) -> Probe:
        body: dict[str, Any] = {
            "scheduler": "stopping" if self.stopping else (
                "running" if self.scheduler_running else "stopped"
            ),
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "run_in_progress": self.running_since is not None,
        }
        if self.stopping:
            return True, {"status": "stopping", **body}
        if not self.scheduler_running:
            return False, {"status": "scheduler not running", **body}
        return True, {"status": "ok", **body}

    def ready(self) -> Probe:
        """The one place readiness is decided; a new condition adds a reason to
        `_not_ready_because` and a field to the body."""
        age = self._success_age()
        body: dict[str, Any] = {
            "runs": self.runs,
            "last_result": self.last_result.value if self.last_result else None,
            "consecutive_failures": self.consecutive_failures,
            "last_success": (
                datetime.fromtimestamp(self.last_success_wall, UTC).isoformat()
                if self.last_success_wall is not None else None
            ),
            "last_success_age_seconds": round(age, 3) if age is not None else None,
        }
        reason = self._not_ready_because(age)
        if reason is None:
            return True, {"status": "ready", **body}
        return False, {"status": f"not ready: {reason}", **body}

    def _success_age(self) -> float | None:
        if self.last_success_mono is None:
            return None
        return time.monotonic() - self.last_success_mono

    def _not_ready_because(self, age: float | None) -> str | None:
        r = self.readiness
        if self.stopping:
            return "shutting down"
        if age is None:
            return "no successful sync yet"
        if self.consecutive_failures >= r.max_consecutive_failures:
            return f"{self.consecutive_failures} consecutive failed runs"
        if age > r.max_success_age_seconds:
            return f"last success {age:.0f}s ago (max {r.max_success_age_seconds:g}s)"
        return None


# --------------------------------------------------------------------------- HTTP

IDLE_SECONDS = 30.0
"""How long a connection may sit between requests (or in the middle of one)."""
MAX_HEADERS = 100
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # lower-cased names

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told not to; 1.0 is closed after one
        answer (its keep-alive extension is not worth supporting for probes)."""
        connection = self.headers.get("connection", "").lower()
        return self.version == "HTTP/1.1" and "close" not in connection

    @property
    def has_body(self) -> bool:
        length = self.headers.get("content-length", "0").strip()
        return "transfer-encoding" in self.headers or length not in ("", "0")


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = TEXT
    extra: tuple[tuple[str, str], ...] = ()

    def encode(self, *, head: bool, close: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Server: syncd",
            *(f"{name}: {value}" for name, value in self.extra),
        ]
        if close:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head_bytes if head else head_bytes + self.body


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request head on the connection; None when the client is done."""
    line = await _line(reader)
    if not line:
        return None
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadHttpRequest(f"bad request line {line[:80]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        field_line = await _line(reader)
        if not field_line:
            return Request(method, urlsplit(target).path or "/", version, headers)
        name, sep, value = field_line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadHttpRequest(f"bad header line {field_line[:80]!r}")
        headers[name.lower()] = value.strip()
    raise BadHttpRequest("too many headers")


async def _line(reader: asyncio.StreamReader) -> str:
    """One CRLF-terminated line without its ending; "" for the blank line and at EOF.

    A line longer than the reader's limit, or bytes that are no text, are a
    BadHttpRequest; the stream is not trustworthy after that, so the caller closes it.
    """
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise BadHttpRequest("connection closed in the middle of a line") from None
        return ""
    except asyncio.LimitOverrunError:
        raise BadHttpRequest("line too long") from None
    try:
        return raw.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        raise BadHttpRequest("non-ASCII bytes in the request head") from None


class Endpoints:
    """/metrics, /healthz and /readyz, answered on the event loop.

    Every answer carries Content-Length, so Prometheus can keep its connection
    open between scrapes; kubelet probes send ``Connection: close`` and get it.
    Nothing a client sends can end the server: a request it cannot parse gets a
    400 and a closed connection, a vanished client is forgotten.
    """

    def __init__(
        self, metrics: Metrics, liveness: Callable[[], Probe], readiness: Callable[[], Probe]
    ) -> None:
        self.metrics = metrics
        self.liveness = liveness
        self.readiness = readiness
        self._connections: set[asyncio.StreamWriter] = set()

    def route(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n",
                extra=(("Allow", "GET, HEAD"),),
            )
        if request.path == "/metrics":
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
            return Response(HTTPStatus.OK, encoder(self.metrics.registry), content_type)
        if request.path == "/healthz":
            return _json(*self.liveness())
        if request.path == "/readyz":
            return _json(*self.readiness())
        if request.path == "/":
            return Response(HTTPStatus.OK, b"syncd: /metrics /healthz /readyz\n")
        return Response(HTTPStatus.NOT_FOUND, b"not found\n")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, request after request, until either side closes it."""
        self._connections.add(writer)
        try:
            while await self._answer_one(reader, writer):
                pass
        except (ConnectionError, TimeoutError):
            pass  # the client went away or fell silent; nothing to tell anyone
        except Exception:  # a bug in a route must cost one connection, not the daemon
            log.exception("http_request_failed")
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer the next request; whether the connection stays open for another."""
        try:
            async with asyncio.timeout(IDLE_SECONDS):
                request = await read_request(reader)
        except BadHttpRequest as exc:
            writer.write(
                Response(HTTPStatus.BAD_REQUEST, f"bad request: {exc}\n".encode())
                .encode(head=False, close=True)
            )
            await writer.drain()
            return False
        if request is None:
            return False
        # A body is never expected; rather than skip it, answer and close.
        keep = request.keep_alive and not request.has_body
        response = self.route(request)
        writer.write(response.encode(head=request.method == "HEAD", close=not keep))
        await writer.drain()
        return keep

    def close_connections(self) -> None:
        """Idle keep-alive connections would otherwise outlive the server."""
        for writer in list(self._connections):
            writer.close()


def _json(ok: bool, body: dict[str, Any]) -> Response:
    data = (json.dumps(body, sort_keys=True) + "\n").encode()
    status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
    return Response(status, data, "application/json")


def listen(host: str, port: int) -> socket.socket:
    """The listening socket; bound before anything else starts so a busy port is
    a start-up error. One socket, so ``port: 0`` means one port, even for a host
    name that resolves to several addresses."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


# --------------------------------------------------------------------------- logging


def _quiet_scheduler() -> None:
    # Overruns are logged (and counted) by the service itself, as `run_overrun`.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


# --------------------------------------------------------------------------- service


class Service:
    """The daemon: one event loop running the schedule, the event tail, the one
    worker and the endpoints. `health` is what the loop knows; the probes read it
    from there.

    Everything that wants a reconcile puts a request in `queue`; the worker
    takes one at a time (observe, plan, execute, report), so runs never overlap
    and need no lock.
    """

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.health = Health(settings.readiness)
        self.ready_gauge = Gauge(
            "syncd_ready",
            "1 when /readyz answers 200 (daemon only), else 0.",
            registry=self.metrics.registry,
        )
        self.ready_gauge.set_function(lambda: 1.0 if self.ready()[0] else 0.0)
        self.endpoints = Endpoints(self.metrics, self.liveness, self.ready)
        self.scheduler: AsyncIOScheduler | None = None
        self.address: tuple[str, int] | None = None  # bound host and port, once listening
        self.queue = RequestQueue()
        self.clients = Clients(settings, self.metrics)
        self.reconciler = Reconciler(settings, self.clients, self.metrics, keep_view=True)
        self.follower = EventFollower(settings, self.metrics, self.queue, self.clients.tokens)
        self.follower.idle = self._in_sync_still
        self.worker = Worker(
            self.queue, self.reconciler, self.metrics,
            full_done=self.follower.full_run_ended,
            run_started=self.health.run_started, run_ended=self.health.run_ended,
        )
        self._stop = asyncio.Event()
        self._signals = 0
        self._worker: asyncio.Task[None] | None = None
        self._follow_task: asyncio.Task[None] | None = None

    # -- probes

    def liveness(self) -> Probe:
        """Asked on the loop, so the scheduler's own state is current; an answer at
        all is the proof that the loop runs."""
        scheduler = self.scheduler
        job = scheduler.get_job(JOB_ID) if scheduler is not None else None
        self.health.scheduler_seen(
            scheduler is not None and scheduler.running,
            job.next_run_time if job is not None else None,
        )
        return self.health.liveness()

    def ready(self) -> Probe:
        ok, body = self.health.ready()
        stalled = self.follower.stalled_for
        body["events"] = {
            "fast_path": self.follower.active,
            "last_poll_age_seconds": round(stalled, 3) if stalled is not None else None,
        }
        limit = self.settings.events.max_failure_seconds
        if ok and stalled is not None and stalled > limit:
            return False, {**body, "status": (
                f"not ready: admin events not read for {stalled:.0f}s (max {limit:g}s)"
            )}
        return ok, body

    # -- requests

    def _tick(self) -> None:
        """The schedule: a full reconcile, unless one is going or waiting (an
        overrun), or the event tail is healthy and the last full reconcile is
        younger than ``schedule.interval_with_events_seconds``."""
        if self._stop.is_set():
            return
        if self.queue.full_pending or self.worker.running_full:
            self.metrics.overruns.inc()
            log.warning(
                "run_overrun",
                detail="the previous full run is still going or waiting; this scheduled "
                "run is skipped",
            )
            return
        schedule = self.settings.schedule
        if (
            schedule.cron is None
            and self.follower.active
            and self.worker.last_full is not None
            and time.monotonic() - self.worker.last_full < schedule.interval_with_events_seconds
        ):
            return  # the event tail keeps LiteLLM current; the hourly safety net waits
        self.queue.put_full("schedule")

    def _in_sync_still(self) -> None:
        """A poll found no new event: if the last run succeeded and nothing waits,
        LiteLLM is still as in sync as then, and the success stays current."""
        if self.worker.in_sync and self.worker.running is None and self.queue.empty:
            self.metrics.last_success.set(time.time())
            self.health.success_confirmed()

    # -- entry point

    async def run(self) -> int:
        settings = self.settings
        trigger = build_trigger(settings.schedule)
        host, port = settings.server.host, settings.server.port
        try:
            sock = listen(host, port)
        except OSError as exc:
            log.error(
                "service_failed",
                error=f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            )
            await self._close_clients()
            return ExitCode.CONFIG
        server = await asyncio.start_server(self.endpoints.serve, sock=sock)
        bound_host, bound_port = sock.getsockname()[:2]
        self.address = (bound_host, bound_port)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

        _quiet_scheduler()
        try:
            await self.follower.prepare()
        except EventsUnavailable as exc:
            log.error("service_failed", error=str(exc))
            server.close()
            await server.wait_closed()
            await self._close_clients()
            return ExitCode.SOURCE
        self.queue.put_full("start")
        self._worker = asyncio.create_task(self.worker.work(self._stop), name="syncd-worker")
        self.scheduler = self._start_scheduler(trigger)
        self._follow_task = asyncio.create_task(self.follower.run(), name="syncd-events")
        log.info(
            "service_started",
            host=bound_host,
            port=bound_port,
            schedule=describe_schedule(settings.schedule),
            shutdown_timeout_seconds=settings.schedule.shutdown_timeout_seconds,
        )
        try:
            await self._stop.wait()
            await self._shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            server.close()
            self.endpoints.close_connections()
            await server.wait_closed()
            await self._close_clients()
        log.info("service_stopped", runs=self.health.runs)
        return ExitCode.OK

    async def _close_clients(self) -> None:
        await asyncio.gather(self.follower.aclose(), self.clients.aclose())

    def _start_scheduler(self, trigger: BaseTrigger) -> AsyncIOScheduler:
        """The schedule only puts requests in the queue (the first full run was
        put there at start, so the first tick comes one interval later)."""
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            self._tick,
            trigger,
            id=JOB_ID,
            name="sync",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        scheduler.start()
        return scheduler

    # -- shutdown

    def stop(self) -> None:
        """Start a graceful shutdown (what the first SIGTERM/SIGINT does)."""
        self._stop.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("shutdown_requested", signal=sig.name)
            self.stop()
            return
        worker = self._worker
        if worker is not None and not worker.done():
            log.warning("shutdown_forced", signal=sig.name)
            worker.cancel()

    async def _shutdown(self) -> None:
        """No new request, no new write: the run in flight stops starting writes
        (the stop event reaches its applier), the writes on the wire finish, at
        most ``schedule.shutdown_timeout_seconds``; then whatever is left is
        cancelled. Nothing is sent after this returns."""
        self.health.stopping = True
        scheduler = self.scheduler
        assert scheduler is not None
        scheduler.pause()  # fire nothing new
        self.follower.stopping.set()  # poll no more
        tasks = {t for t in (self._worker, self._follow_task) if t is not None and not t.done()}
        if self._worker in tasks and self.worker.running is None:
            assert self._worker is not None
            self._worker.cancel()  # idle: waiting for a request that will not come
        if tasks:
            timeout = self.settings.schedule.shutdown_timeout_seconds
            if self.worker.running is not None:
                log.info("shutdown_waiting_for_run", timeout_seconds=timeout)
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                log.warning("shutdown_timeout", timeout_seconds=timeout)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)


def serve(settings: Settings) -> int:
    """Run the daemon until SIGTERM/SIGINT; the process exit code."""
    return asyncio.run(Service(settings).run())
