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

HTTP (one port, ``server.host``:``server.port``, stdlib ``http.server`` in a thread)
    ``/metrics``  Prometheus exposition of the daemon's registry.
    ``/healthz``  liveness: 200 while the scheduler runs and the event loop
                  answers; 503 when either is stuck.
    ``/readyz``   readiness: 200 once a run succeeded, unless the last
                  ``readiness.max_consecutive_failures`` runs all failed or the
                  last success is older than ``readiness.max_success_age_seconds``.

``push_metrics`` is the ``--once --push-metrics`` side: it pushes one run's
registry to a Prometheus Pushgateway and never fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import Gauge
from prometheus_client.exposition import choose_encoder, push_to_gateway

from syncd.config import ReadinessSettings, ScheduleSettings, Settings
from syncd.errors import ExitCode
from syncd.metrics import Metrics
from syncd.sync import run_sync

log = structlog.get_logger("syncd.service")

JOB_ID = "sync"
HEARTBEAT_SECONDS = 1.0
LOOP_STALL_SECONDS = 60.0
"""/healthz fails when the event loop has not run its heartbeat for this long."""

SERVICE_EVENTS = frozenset(
    {
        "service_starting",
        "service_started",
        "service_stopped",
        "service_failed",
        "shutdown_requested",
        "shutdown_waiting_for_run",
        "shutdown_timeout",
        "shutdown_forced",
        "run_overrun",
        "run_cancelled",
        "run_crashed",
        "library_log",
    }
)
"""Events the daemon itself logs; they belong to no run and carry no run_id."""

# Results that count as a failed run, as in sync._record and the
# syncd_consecutive_failures gauge. "braked" neither fails nor succeeds.
FAILED_RESULTS = frozenset({"failure", "partial"})


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


@dataclass
class Health:
    """What /healthz and /readyz report; written by the event loop, read by HTTP threads."""

    readiness: ReadinessSettings
    lock: threading.Lock = field(default_factory=threading.Lock)
    scheduler_running: bool = False
    stopping: bool = False
    heartbeat: float = field(default_factory=time.monotonic)
    next_run: datetime | None = None
    runs: int = 0
    last_result: str | None = None
    last_success_wall: float | None = None
    last_success_mono: float | None = None
    consecutive_failures: int = 0
    running_since: float | None = None

    def beat(self, next_run: datetime | None, scheduler_running: bool) -> None:
        with self.lock:
            self.heartbeat = time.monotonic()
            self.next_run = next_run
            self.scheduler_running = scheduler_running

    def run_started(self) -> None:
        with self.lock:
            self.running_since = time.monotonic()

    def run_ended(self, result: str) -> None:
        with self.lock:
            self.running_since = None
            self.runs += 1
            self.last_result = result
            if result == "success":
                self.last_success_wall = time.time()
                self.last_success_mono = time.monotonic()
                self.consecutive_failures = 0
            elif result in FAILED_RESULTS:
                self.consecutive_failures += 1

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        with self.lock:
            lag = time.monotonic() - self.heartbeat
            body: dict[str, Any] = {
                "scheduler": "stopping" if self.stopping else (
                    "running" if self.scheduler_running else "stopped"
                ),
                "loop_lag_seconds": round(lag, 3),
                "next_run": self.next_run.isoformat() if self.next_run else None,
                "run_in_progress": self.running_since is not None,
            }
            if self.stopping:
                return True, {"status": "stopping", **body}
            if not self.scheduler_running:
                return False, {"status": "scheduler not running", **body}
            if lag > LOOP_STALL_SECONDS:
                return False, {"status": f"event loop stalled for {lag:.0f}s", **body}
            return True, {"status": "ok", **body}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        with self.lock:
            age = (
                time.monotonic() - self.last_success_mono
                if self.last_success_mono is not None else None
            )
            body: dict[str, Any] = {
                "runs": self.runs,
                "last_result": self.last_result,
                "consecutive_failures": self.consecutive_failures,
                "last_success": (
                    datetime.fromtimestamp(self.last_success_wall, UTC).isoformat()
                    if self.last_success_wall is not None else None
                ),
                "last_success_age_seconds": round(age, 3) if age is not None else None,
            }
            r = self.readiness
            if self.stopping:
                reason = "shutting down"
            elif age is None:
                reason = "no successful sync yet"
            elif self.consecutive_failures >= r.max_consecutive_failures:
                reason = f"{self.consecutive_failures} consecutive failed runs"
            elif age > r.max_success_age_seconds:
                reason = (
                    f"last success {age:.0f}s ago (max {r.max_success_age_seconds:g}s)"
                )
            else:
                return True, {"status": "ready", **body}
            return False, {"status": f"not ready: {reason}", **body}


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "syncd"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.metrics.registry), content_type)
        elif path == "/healthz":
            self._json(*self.server.health.liveness())
        elif path == "/readyz":
            self._json(*self.server.health.ready())
        elif path == "/":
            self._send(200, b"syncd: /metrics /healthz /readyz\n", "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _json(self, ok: bool, body: dict[str, Any]) -> None:
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        self._send(200 if ok else 503, data, "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds would drown the log: stay quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, metrics: Metrics, health: Health) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.metrics = metrics
        self.health = health
        super().__init__((host, port), _Handler)


# --------------------------------------------------------------------------- logging


class _ToStructlog(logging.Handler):
    """Libraries log through the stdlib; without this, their warnings would reach
    stderr as plain text between the JSON lines (Python's last-resort handler)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log.log(
                record.levelno,
                "library_log",
                source=record.name,
                message=record.getMessage(),
                **({"exc_info": record.exc_info} if record.exc_info else {}),
            )
        except Exception:  # logging must never take the daemon down
            self.handleError(record)


def _route_library_logs() -> None:
    root = logging.getLogger()
    if not root.handlers:  # leave a logging set-up made elsewhere alone
        handler = _ToStructlog(level=logging.WARNING)
        root.addHandler(handler)
    # Overruns are logged (and counted) by the service itself, as `run_overrun`.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


# --------------------------------------------------------------------------- service


class Service:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.health = Health(settings.readiness)
        self.ready_gauge = Gauge(
            "syncd_ready",
            "1 when /readyz answers 200 (daemon only), else 0.",
            registry=self.metrics.registry,
        )
        self.ready_gauge.set_function(lambda: 1.0 if self.health.ready()[0] else 0.0)
        self.scheduler: AsyncIOScheduler | None = None
        self.server: _Server | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._job_task: asyncio.Task[Any] | None = None

    # -- entry point

    async def run(self) -> int:
        settings = self.settings
        trigger = build_trigger(settings.schedule)
        try:
            self.server = _Server(
                settings.server.host, settings.server.port, self.metrics, self.health
            )
        except OSError as exc:
            log.error(
                "service_failed",
                error=f"cannot listen on {settings.server.host}:{settings.server.port}: "
                f"{exc.strerror or exc}",
            )
            return ExitCode.CONFIG
        http_thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
            name="syncd-http", daemon=True,
        )
        http_thread.start()
        host, port = self.server.server_address[:2]

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

        _route_library_logs()
        scheduler = AsyncIOScheduler(timezone=UTC)
        self.scheduler = scheduler
        scheduler.add_listener(self._on_overrun, EVENT_JOB_MAX_INSTANCES)
        scheduler.add_job(
            self._job,
            trigger,
            id=JOB_ID,
            name="sync",
            max_instances=1,  # never two runs at once; the rest is counted as overrun
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),  # the first run starts now, without jitter
        )
        scheduler.start()
        heartbeat = asyncio.create_task(self._heartbeat(), name="syncd-heartbeat")
        log.info(
            "service_started",
            host=host,
            port=port,
            schedule=describe_schedule(settings.schedule),
            shutdown_timeout_seconds=settings.schedule.shutdown_timeout_seconds,
        )
        try:
            await self._stop.wait()
            await self._shutdown()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self.server.shutdown()
            self.server.server_close()
        log.info("service_stopped", runs=self.health.runs)
        return ExitCode.OK

    # -- the scheduled job

    async def _job(self) -> None:
        if self._stop.is_set():
            return
        self._job_task = asyncio.current_task()
        self.health.run_started()
        result = "failure"
        try:
            outcome = await run_sync(self.settings, mode="apply", metrics=self.metrics)
            result = outcome.result
        except asyncio.CancelledError:
            # Only _shutdown cancels a run; run_sync has recorded and logged it already.
            log.warning("run_cancelled", reason="shutdown")
        except Exception:  # run_sync does not raise; keep the daemon alive if it ever does
            log.exception("run_crashed")
        finally:
            self._job_task = None
            self.health.run_ended(result)

    def _on_overrun(self, event: JobSubmissionEvent) -> None:
        self.metrics.overruns.inc()
        times = getattr(event, "scheduled_run_times", None) or []
        log.warning(
            "run_overrun",
            scheduled_for=times[-1].isoformat() if times else None,
            detail="the previous run is still going; this scheduled run is skipped",
        )

    async def _heartbeat(self) -> None:
        """Proves to /healthz (another thread) that the event loop still runs."""
        while True:
            scheduler = self.scheduler
            try:
                job = scheduler.get_job(JOB_ID) if scheduler is not None else None
                next_run = job.next_run_time if job is not None else None
            except Exception:  # never let a lookup end the heartbeat
                next_run = None
            self.health.beat(next_run, scheduler is not None and scheduler.running)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # -- shutdown

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("shutdown_requested", signal=sig.name)
            self._stop.set()
            return
        task = self._job_task
        if task is not None and not task.done():
            log.warning("shutdown_forced", signal=sig.name)
            task.cancel()

    async def _shutdown(self) -> None:
        with self.health.lock:
            self.health.stopping = True
        scheduler = self.scheduler
        assert scheduler is not None
        scheduler.pause()  # fire nothing new
        await asyncio.sleep(0)  # a job submitted just before the signal gets to start
        task = self._job_task
        if task is not None and not task.done():
            timeout = self.settings.schedule.shutdown_timeout_seconds
            log.info("shutdown_waiting_for_run", timeout_seconds=timeout)
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                log.warning("shutdown_timeout", timeout_seconds=timeout)
                task.cancel()
                await asyncio.wait({task})
        # No job is in flight, so the executor has nothing to cancel.
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)


def serve(settings: Settings) -> int:
    """Run the daemon until SIGTERM/SIGINT; the process exit code."""
    return asyncio.run(Service(settings).run())


# --------------------------------------------------------------------------- pushgateway


def push_metrics(settings: Settings, metrics: Metrics) -> None:
    """Push one run's metrics to the Pushgateway (grouping key: job); never raises."""
    gateway = settings.pushgateway
    if not gateway.url:
        log.warning(
            "metrics_push_skipped", reason="--push-metrics given but pushgateway.url is not set"
        )
        return
    try:
        push_to_gateway(
            gateway.url, job=gateway.job, registry=metrics.registry,
            timeout=gateway.timeout_seconds,
        )
    except Exception as exc:  # a monitoring hiccup must not fail the sync
        log.error("metrics_push_failed", url=gateway.url, job=gateway.job,
                  error=f"{type(exc).__name__}: {exc}")
        return
    log.info("metrics_pushed", url=gateway.url, job=gateway.job)
