"""The daemon's one worker: take a request, run it, act on its report.

Runs never overlap because there is only this one loop; nothing else runs a
reconcile and nothing needs a lock. What a report asks for goes back into the
queue: a scoped run that failed is retried with the next batch (its events
merged with the new ones), and after `FAILED_RUNS_BEFORE_FULL` failures in a
row its events are left to a full reconcile; a report that says LiteLLM
changed outside syncd (or that the kept view is lost) asks for a full
reconcile.

The runner is a Protocol (`syncd.reconciler.Reconciler` in the daemon), so
the loop is tested on its own with a runner that only returns reports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from syncd.errors import RunResult
from syncd.events import Hints
from syncd.metrics import Metrics
from syncd.reconciler import RunReport
from syncd.requests import Full, ReconcileRequest, RequestQueue

log = structlog.get_logger("syncd.service")

FAILED_RUNS_BEFORE_FULL = 3
"""Scoped runs failing in a row before their events are left to a full reconcile."""


class Runner(Protocol):
    """What the worker needs of the reconciler."""

    @property
    def can_scope(self) -> bool:
        """Whether a scoped request can be run scoped (there is a kept state)."""
        ...

    async def run(self, request: ReconcileRequest, *, stop: asyncio.Event | None) -> RunReport:
        """Run one request; never raises for expected failures."""
        ...


class Worker:
    """Takes requests from `queue` one at a time until `stop` is set."""

    def __init__(
        self,
        queue: RequestQueue,
        runner: Runner,
        metrics: Metrics,
        *,
        full_done: Callable[[], None] = lambda: None,
        run_started: Callable[[], None] = lambda: None,
        run_ended: Callable[[RunResult], None] = lambda _: None,
    ) -> None:
        self.queue = queue
        self.runner = runner
        self.metrics = metrics
        self.full_done = full_done  # after every full run (the tail re-checks the realm)
        self.run_started = run_started
        self.run_ended = run_ended
        self.running: ReconcileRequest | None = None
        self.last_full: float | None = None  # monotonic start of the last full run
        self.failed_scoped = 0
        self.full_ok = False  # the last full run succeeded
        self.in_sync = False  # that, and every run since succeeded and asked for nothing

    @property
    def running_full(self) -> bool:
        return isinstance(self.running, Full)

    async def work(self, stop: asyncio.Event) -> None:
        """The loop. The stop event also reaches the run in flight: it starts no
        new write after it is set."""
        while not stop.is_set():
            request = await self.queue.get()
            if stop.is_set():
                return
            await self.run_one(request, stop)

    async def run_one(self, request: ReconcileRequest, stop: asyncio.Event) -> None:
        self.running = request
        self.run_started()
        result = RunResult.FAILURE
        report: RunReport | None = None
        try:
            if isinstance(request, Full) or not self.runner.can_scope:
                self.last_full = time.monotonic()
            report = await self.runner.run(request, stop=stop)
            result = report.result
        except Exception:  # run() does not raise; keep the daemon alive if it ever does
            log.exception("run_crashed")
        finally:
            self.running = None
            self.run_ended(result)
        if report is None:
            return
        if report.cancelled:
            log.warning("run_cancelled", reason="shutdown")
            raise asyncio.CancelledError
        self.after(request, report, stopping=stop.is_set())

    def after(self, request: ReconcileRequest, report: RunReport, *, stopping: bool) -> None:
        """What a run's report asks of the queue and of the event metrics."""
        # Braked: its safe part is done; the rest waits for a person, as in a
        # full reconcile (which meets the same brake).
        done = report.result in (RunResult.SUCCESS, RunResult.BRAKED)
        if report.kind == "full":
            self.full_ok = report.result is RunResult.SUCCESS
        self.in_sync = (
            self.full_ok and report.result is RunResult.SUCCESS and report.needs_full is None
        )
        if self.in_sync and report.kind == "scoped":
            # Everything Keycloak reported since a successful full run is applied:
            # as good as a success for SyncdNoRecentSuccess on a busy realm.
            self.metrics.last_success.set(time.time())
        if done and request.hints.events:
            events_applied(self.metrics, request.hints)
        if report.kind == "full":
            self.full_done()
            self.failed_scoped = 0
        elif done:
            self.failed_scoped = 0
        elif not stopping:
            self.failed_scoped += 1
            if self.failed_scoped >= FAILED_RUNS_BEFORE_FULL:
                self.failed_scoped = 0
                self.request_full(f"{FAILED_RUNS_BEFORE_FULL} fast-path runs failed in a row",
                                  request.hints)
            else:
                self.queue.put_scoped(request.hints)
        if report.needs_full is not None and not stopping:
            self.request_full(report.needs_full)

    def request_full(self, reason: str, hints: Hints | None = None) -> None:
        if self.queue.put_full(reason, hints):
            log.info("full_reconcile_requested", reason=reason)


def events_applied(metrics: Metrics, hints: Hints) -> None:
    """The events behind `hints` reached LiteLLM: their propagation metrics."""
    now = time.time()
    metrics.events_applied.inc(hints.events)
    for stamp in hints.stamps:
        metrics.event_propagation.observe(max(0.0, now - stamp / 1000))
    if hints.newest_ms is not None:
        metrics.event_lag.set(max(0.0, now - hints.newest_ms / 1000))
