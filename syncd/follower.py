"""The daemon's admin-event tail: it turns Keycloak's admin events into requests.

`EventFollower` polls the tail (`syncd.events.Tail`) every
``events.poll_seconds`` and puts what the new events name into the request
queue (`syncd.requests`) as a scoped request; a gap in the tail puts a full
request. It runs nothing itself: the one worker (`syncd.service`) does.

Whether the fast path is used (``events.enabled``) is decided here: ``auto``
uses it when the service account can read the realm's event settings and
admin events are switched on, and otherwise says once why not; ``true`` makes
either missing a start-up error. The settings are checked again after every
full reconcile and, while the fast path is off, every few seconds, so
switching events on (or off) in Keycloak is noticed.

The tail has its own small HTTP client (one request at a time, its own
retry budget per poll) next to the worker's, sharing the process's one
Keycloak token provider: a poll never waits for a run's reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from syncd.config import Settings
from syncd.errors import EventsUnavailable, SourceReadError
from syncd.events import Hints, Tail
from syncd.http import ApiClient, RequestCounter, RetryBudget
from syncd.keycloak import KeycloakReader, TokenProvider
from syncd.metrics import Metrics
from syncd.requests import RequestQueue

log = structlog.get_logger("syncd.events")

__all__ = ["EventFollower", "EventsUnavailable"]

INACTIVE_RECHECK_SECONDS = 10.0
"""While the fast path is off (events not recorded, role missing), how often the
realm's event settings are read again: switching events on is noticed within
seconds, not only after the next full reconcile."""


class EventFollower:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        queue: RequestQueue,
        tokens: TokenProvider,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.queue = queue
        events = settings.events
        self.poll_seconds = events.poll_seconds
        self.max_failure_seconds = events.max_failure_seconds
        self.api = ApiClient(
            "keycloak", settings.keycloak.url, verify=settings.keycloak.httpx_verify(),
            timeout=settings.keycloak.timeout_seconds, concurrency=1,
            retries=settings.retries, budget=RetryBudget(0), metrics=metrics,
            counter=RequestCounter(),
        )
        self.reader = KeycloakReader(
            self.api, tokens, realm=settings.keycloak.realm,
            page_size=settings.keycloak.page_size, client_id=settings.keycloak.client_id,
        )
        self.tail = Tail(
            self.reader, overlap_seconds=events.overlap_seconds, page_size=events.page_size,
            max_pages=events.max_pages, max_failure_seconds=events.max_failure_seconds,
        )
        self.active = False
        self.unavailable_said = False
        self.recheck = False
        self.last_poll_ok: float | None = None  # monotonic
        self.last_check = time.monotonic()  # of the realm's event settings
        self.stopping = asyncio.Event()
        # Called after a poll that found nothing new (the service keeps its
        # last success current then).
        self.idle: Callable[[], None] = lambda: None

    async def aclose(self) -> None:
        await self.api.aclose()

    def _new_poll(self) -> None:
        """Each poll (or settings check) has its own small retry budget."""
        self.api.start_run(RetryBudget(self.settings.retries.max_attempts), RequestCounter())

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
        self._new_poll()
        try:
            config = await self.reader.read_events_config()
        except SourceReadError as exc:
            if exc.status == 403:
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
        """After a full reconcile, when the realm's event settings changed, and
        every `INACTIVE_RECHECK_SECONDS` while the fast path is off."""
        self.recheck = False
        self.last_check = time.monotonic()
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

    def full_run_ended(self) -> None:
        """A full reconcile ended: look at the realm's event settings again."""
        self.recheck = True

    @property
    def stalled_for(self) -> float | None:
        """Seconds since the last good poll while following (None when not)."""
        if not self.active or self.last_poll_ok is None:
            return None
        return time.monotonic() - self.last_poll_ok

    # -- the loop

    async def run(self) -> None:
        """Poll until `stopping`; nothing else may end the loop.

        Polls keep a fixed cadence, every `poll_seconds` from the previous
        poll's start: a poll is one small request and never waits for a run.
        """
        due = time.monotonic() + self.poll_seconds
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, due - time.monotonic()))
            if self.stopping.is_set():
                return
            due = max(due + self.poll_seconds, time.monotonic())
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: log it, keep following
                log.exception("event_poll_crashed")

    async def step(self) -> None:
        inactive_long = (
            not self.active
            and self.settings.events.enabled != "false"
            and time.monotonic() - self.last_check >= INACTIVE_RECHECK_SECONDS
        )
        if self.recheck or inactive_long:
            await self._check_again()
        if not self.active:
            return
        self._new_poll()
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
            self._gap(hints.gap or "unreadable", hints.full, hints)
            return
        if hints.check_config:
            await self._check_again()
            if not self.active:
                return
        if hints.users or hints.groups:
            self.queue.put_scoped(hints)
        elif not hints.events:
            self.idle()

    def _gap(self, reason: str, detail: str, hints: Hints | None = None) -> None:
        self.metrics.event_gaps.labels(reason=reason).inc()
        log.warning("event_gap", reason=reason, detail=detail, action="full reconcile now")
        if self.queue.put_full(detail, hints):
            log.info("full_reconcile_requested", reason=detail)

