"""The worker on its own: what it does with each kind of report.

The runner here only hands back reports (the Protocol seam); the real
reconciler is exercised end to end in tests/service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from syncd.errors import RunResult, SourceReadError
from syncd.events import Hints
from syncd.metrics import Metrics
from syncd.reconciler import Kind, RunReport
from syncd.requests import Full, ReconcileRequest, RequestQueue, Scoped
from syncd.worker import FAILED_RUNS_BEFORE_FULL, Worker


class Reports:
    """A runner that answers each request with the next prepared report."""

    def __init__(self, reports: Iterator[RunReport], can_scope: bool = True) -> None:
        self.reports = reports
        self.seen: list[ReconcileRequest] = []
        self._can_scope = can_scope

    @property
    def can_scope(self) -> bool:
        return self._can_scope

    async def run(self, request: ReconcileRequest, *, stop: asyncio.Event | None) -> RunReport:
        self.seen.append(request)
        return next(self.reports)


def report(kind: Kind, *, failed: bool = False, needs_full: str | None = None) -> RunReport:
    return RunReport(
        run_id="r", mode="apply", kind=kind,
        failure=SourceReadError("Keycloak down") if failed else None, needs_full=needs_full,
    )


def scoped(*users: str) -> Scoped:
    return Scoped(Hints(users=set(users), events=len(users), stamps=[1] * len(users)))


def run(worker: Worker, request: ReconcileRequest) -> None:
    asyncio.run(worker.run_one(request, asyncio.Event()))


def test_a_failed_scoped_run_is_retried_then_left_to_a_full_reconcile() -> None:
    queue = RequestQueue()
    runner = Reports(iter([report("scoped", failed=True)] * FAILED_RUNS_BEFORE_FULL))
    worker = Worker(queue, runner, Metrics())
    request: ReconcileRequest | None = scoped("alice")
    for _ in range(FAILED_RUNS_BEFORE_FULL - 1):
        assert request is not None
        run(worker, request)
        request = queue.take()
        assert isinstance(request, Scoped) and request.hints.users == {"alice"}
    assert request is not None
    run(worker, request)
    after = queue.take()
    assert isinstance(after, Full)
    assert after.hints.users == {"alice"}  # its events are counted when the full run applies


def test_a_report_that_needs_a_full_reconcile_gets_one() -> None:
    queue = RequestQueue()
    worker = Worker(queue, Reports(iter([report("scoped", needs_full="team t changed")])),
                    Metrics())
    run(worker, scoped("alice"))
    request = queue.take()
    assert isinstance(request, Full) and request.reason == "team t changed"
    assert not worker.in_sync


def test_applied_events_are_counted_only_when_the_run_succeeded() -> None:
    metrics = Metrics()
    queue = RequestQueue()
    worker = Worker(queue, Reports(iter([report("full"), report("scoped", failed=True),
                                         report("scoped")])), metrics)
    run(worker, Full("start"))
    run(worker, scoped("a", "b"))
    assert metrics.events_applied._value.get() == 0
    retry = queue.take()
    assert retry is not None
    run(worker, retry)
    assert metrics.events_applied._value.get() == 2
    assert worker.in_sync and queue.empty
    # A scoped success after a successful full run keeps the last success current.
    assert metrics.last_success._value.get() > 0


def test_scoped_successes_do_not_stand_for_a_failed_full_run() -> None:
    metrics = Metrics()
    worker = Worker(RequestQueue(), Reports(iter([report("full", failed=True),
                                                  report("scoped")])), metrics)
    run(worker, Full("start"))
    run(worker, scoped("a"))
    assert not worker.in_sync
    assert metrics.last_success._value.get() == 0


def test_a_full_run_tells_the_tail_and_resets_the_failures() -> None:
    told: list[str] = []
    results: list[RunResult] = []
    worker = Worker(RequestQueue(), Reports(iter([report("full")])), Metrics(),
                    full_done=lambda: told.append("full"), run_ended=results.append)
    worker.failed_scoped = 2
    run(worker, Full("schedule"))
    assert told == ["full"] and worker.failed_scoped == 0
    assert results == [RunResult.SUCCESS]
    assert worker.last_full is not None and worker.running is None


def test_the_loop_stops_when_asked_and_takes_one_request_at_a_time() -> None:
    async def scenario() -> list[ReconcileRequest]:
        queue = RequestQueue()
        runner = Reports(iter([report("full"), report("scoped")]))
        worker = Worker(queue, runner, Metrics())
        stop = asyncio.Event()
        queue.put_full("start")
        queue.put_scoped(Hints(users={"x"}))  # covered by the full one
        loop = asyncio.create_task(worker.work(stop))
        await asyncio.sleep(0.05)
        queue.put_scoped(Hints(users={"y"}))
        await asyncio.sleep(0.05)
        stop.set()
        queue.put_full("ignored: stopping")
        await asyncio.wait_for(loop, 1)
        return runner.seen

    seen = asyncio.run(scenario())
    assert [type(r).__name__ for r in seen] == ["Full", "Scoped"]
