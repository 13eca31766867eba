"""The daemon's fast path: follow Keycloak's admin events between full reconciles.

`EventFollower` polls the tail (`syncd.events.Tail`) every
``events.poll_seconds``, and runs `syncd.sync.run_fast` on the users and
groups the new events name, on top of the snapshot of the last full
reconcile. Full and fast runs share one lock, so they never overlap. A gap in
the tail asks the service for a full reconcile at once; a fast run that fails
is retried with the next batch, and after a few failures in a row the batch is
left to a full reconcile instead: a failing fast path never blocks one.

Whether the fast path is used (``events.enabled``) is decided here: ``auto``
uses it when the service account can read the realm's event settings and
admin events are switched on, and otherwise says once why not; ``true`` makes
either missing a start-up error. The settings are checked again after every
full reconcile, so switching events on (or off) in Keycloak is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from syncd.config import Settings
from syncd.desired import SourceSnapshot
from syncd.errors import RunResult, SourceReadError
from syncd.events import Hints, Tail
from syncd.http import ApiClient, RequestCounter, RetryBudget
from syncd.keycloak import KeycloakReader, TokenProvider
from syncd.metrics import Metrics
from syncd.sync import RunOutcome, run_fast

log = structlog.get_logger("syncd.events")

FAILED_RUNS_BEFORE_FULL = 3
"""Fast runs failing in a row before their batch is left to a full reconcile."""
MAX_PENDING_USERS = 5_000
"""Hinted users waiting for a snapshot beyond which a full reconcile is cheaper."""


class EventsUnavailable(SourceReadError):
    """``events.enabled: true`` but the fast path's prerequisites are missing."""


class EventFollower:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        runs: asyncio.Lock,
        request_full: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.runs = runs  # held by every run, full or fast
        self.request_full = request_full
        events = settings.events
        self.poll_seconds = events.poll_seconds
        self.max_failure_seconds = events.max_failure_seconds
        self.api = ApiClient(
            "keycloak", settings.keycloak.url, verify=settings.keycloak.httpx_verify(),
            timeout=settings.keycloak.timeout_seconds, concurrency=1,
            retries=settings.retries, budget=RetryBudget(0), metrics=metrics,
            counter=RequestCounter(),
        )
        self.tokens = TokenProvider(settings.keycloak)
        self.reader = KeycloakReader(
            self.api, self.tokens, realm=settings.keycloak.realm,
            page_size=settings.keycloak.page_size, client_id=settings.keycloak.client_id,
        )
        self.tail = Tail(
            self.reader, overlap_seconds=events.overlap_seconds, page_size=events.page_size,
            max_pages=events.max_pages, max_failure_seconds=events.max_failure_seconds,
        )
        self.active = False
        self.unavailable_said = False
        self.recheck = False
        self.snapshot: SourceSnapshot | None = None
        self.pending = Hints()
        self.failed_runs = 0
        self.last_poll_ok: float | None = None  # monotonic
        self.stopping = asyncio.Event()

    async def aclose(self) -> None:
        await asyncio.gather(self.api.aclose(), self.tokens.aclose())

    # -- whether to follow at all

    async def prepare(self) -> None:
        """Decide the mode before the first full reconcile (which the tail's seed
        then covers). EventsUnavailable with ``enabled: true``."""
        if self.settings.events.enabled == "false":
            log.info("events_disabled", detail="events.enabled is false: full reconciles only")
            return
        why = await self._why_not() or await self._seed()
        if why is None:
            self._set_active(True)
            self.last_poll_ok = time.monotonic()
            log.info("events_following", poll_seconds=self.poll_seconds,
                     realm=self.settings.keycloak.realm)
            return
        if self.settings.events.enabled == "true":
            raise EventsUnavailable(f"events.enabled is true but {why}")
        self._unavailable(why)

    async def _why_not(self) -> str | None:
        """Why the fast path cannot be used now, or None when it can."""
        realm = self.settings.keycloak.realm
        self.api.budget = RetryBudget(self.settings.retries.max_attempts)
        try:
            config = await self.reader.read_events_config()
        except SourceReadError as exc:
            if "HTTP 403" in str(exc):
                return (
                    f"the service account of client '{self.settings.keycloak.client_id}' "
                    "lacks the realm-management role 'view-events'"
                )
            return f"the realm's event settings could not be read ({exc})"
        if config.get("adminEventsEnabled") is not True:
            return (
                f"realm '{realm}' does not record admin events (Realm settings > Events > "
                "Admin events settings > Save events)"
            )
        return None

    async def _seed(self) -> str | None:
        """Start the tail at the newest event (None), or say why it cannot read them."""
        try:
            await self.tail.start()
        except SourceReadError as exc:
            return f"admin events could not be read ({exc})"
        return None

    def _unavailable(self, why: str) -> None:
        self._set_active(False)
        if not self.unavailable_said:
            log.warning("events_unavailable", reason=why,
                        detail="full reconciles only (README: Seconds, not minutes)")
            self.unavailable_said = True

    def _set_active(self, active: bool) -> None:
        self.active = active
        self.metrics.fast_path_active.set(1 if active else 0)

    async def _check_again(self) -> None:
        """After a full reconcile, or when the realm's event settings changed."""
        self.recheck = False
        if self.settings.events.enabled == "false":
            return
        why = await self._why_not()
        if why is None and not self.active:
            why = await self._seed()
        if why is None and not self.active:
            self._set_active(True)
            self.last_poll_ok = time.monotonic()
            self.unavailable_said = False
            log.info("events_following", poll_seconds=self.poll_seconds,
                     realm=self.settings.keycloak.realm)
            # Events before now were not followed: the tail's restart is a gap.
            self._gap("restart", "the fast path was switched on")
        elif why is not None and self.active:
            self.unavailable_said = False
            self._unavailable(why)
            self._gap("disabled", why)

    # -- what full reconciles tell it

    def full_run_ended(self, outcome: RunOutcome) -> None:
        """A full reconcile's read is the new base for the fast path."""
        if outcome.snapshot is not None:
            self.snapshot = outcome.snapshot
        self.recheck = True

    @property
    def stalled_for(self) -> float | None:
        """Seconds since the last good poll while following (None when not)."""
        if not self.active or self.last_poll_ok is None:
            return None
        return time.monotonic() - self.last_poll_ok

    # -- the loop

    async def run(self) -> None:
        """Poll until `stop` (a fast run in flight finishes first); nothing else
        may end the loop.

        Polls keep a fixed cadence, every `poll_seconds` from the previous
        poll's start, not from the end of the run it led to: a change made
        during a run waits for the next tick, not for a run plus a full interval.
        """
        due = time.monotonic() + self.poll_seconds
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, due - time.monotonic()))
            if self.stopping.is_set():
                return
            # A run longer than the interval: poll at once, then back on cadence.
            due = max(due + self.poll_seconds, time.monotonic())
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: log it, keep following
                log.exception("event_poll_crashed")

    async def step(self) -> None:
        if self.recheck:
            await self._check_again()
        if not self.active:
            return
        self.api.budget = RetryBudget(self.settings.retries.max_attempts)
        try:
            poll = await self.tail.poll()
        except SourceReadError as exc:
            log.warning("event_poll_failed", error=str(exc))
            return
        self.last_poll_ok = time.monotonic()
        self.metrics.event_last_poll.set(time.time())
        hints = poll.hints
        self.metrics.events_seen.inc(hints.events)
        if hints.full is not None:
            self._gap(hints.gap or "unreadable", hints.full)
            return
        if hints.check_config:
            await self._check_again()
            if not self.active:
                return
        self.pending.merge(hints)
        if not (self.pending.users or self.pending.groups):
            return
        if self.snapshot is None:  # the first full reconcile has not read Keycloak yet
            if len(self.pending.users) > MAX_PENDING_USERS:
                self._gap("burst", f"{len(self.pending.users)} users changed before a full read")
            return
        await self._run_pending()

    async def _run_pending(self) -> None:
        batch, self.pending = self.pending, Hints()
        assert self.snapshot is not None
        async with self.runs:
            outcome = await run_fast(self.settings, self.snapshot, batch, metrics=self.metrics)
        if outcome.failure is None and outcome.snapshot is not None:
            self.snapshot = outcome.snapshot
        if outcome.result in (RunResult.SUCCESS, RunResult.BRAKED):
            # Braked: its safe part is done; the rest waits for a person, as
            # in a full reconcile (which will meet the same brake).
            self.failed_runs = 0
            self._applied(batch)
            return
        self.failed_runs += 1
        if self.failed_runs >= FAILED_RUNS_BEFORE_FULL:
            self.failed_runs = 0
            self.request_full(f"{FAILED_RUNS_BEFORE_FULL} fast-path runs failed in a row")
        else:
            self.pending.merge(batch)

    def _applied(self, batch: Hints) -> None:
        now = time.time()
        self.metrics.events_applied.inc(batch.events)
        for stamp in batch.stamps:
            self.metrics.event_propagation.observe(max(0.0, now - stamp / 1000))
        if batch.newest_ms is not None:
            self.metrics.event_lag.set(max(0.0, now - batch.newest_ms / 1000))

    def _gap(self, reason: str, detail: str) -> None:
        self.metrics.event_gaps.labels(reason=reason).inc()
        log.warning("event_gap", reason=reason, detail=detail, action="full reconcile now")
        self.pending = Hints()
        self.request_full(detail)
