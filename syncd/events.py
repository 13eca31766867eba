"""The fast path's input: Keycloak admin events, tailed safely, turned into hints.

An admin event says that someone changed a user, a group or a membership. It
is a hint, never the truth: the fast path re-reads exactly the users and
groups the hints name (a scoped request, `syncd.reconciler`) and plans only for them, with
the same fresh confirmation before anything destructive as a full reconcile.

Tailing is the delicate part, and all of it is here:

- Keycloak stamps an event before its transaction commits, so an event may
  appear after later ones were already listed. Each poll therefore starts
  ``overlap`` before the newest event seen, and events are deduplicated by
  their id (Keycloak 23+ gives one; older servers get a fingerprint). The ids
  remembered are only those inside that window, and at most `max_remembered`.
- Anything that can hide a change is a *gap* and asks for a full reconcile:
  admin events switched off, the poll failing for longer than a limit, a
  burst larger than one poll may read, events already expired under the
  realm's retention, an event the tail cannot interpret. A restart is a gap
  too: the cursor lives in memory, and the daemon starts with a full reconcile.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from syncd.errors import EventBurstTooLarge, EventFormatError, SourceReadError

# Resource paths of the events that change who is in which team.
_MEMBERSHIP = re.compile(r"^users/([^/]+)/groups/([^/]+)$")
_USER = re.compile(r"^users/([^/]+)(?:/.*)?$")
_GROUP = re.compile(r"^groups/([^/]+)(?:/children(?:/[^/]+)?)?$")
# Resource type -> (its path, whose id the first group is, what to call it).
_SUBJECTS = {
    "GROUP_MEMBERSHIP": (_MEMBERSHIP, "users", "membership"),
    "USER": (_USER, "users", "user"),
    "GROUP": (_GROUP, "groups", "group"),
}
_FEDERATION_TYPES = frozenset({"USER_FEDERATION_PROVIDER", "COMPONENT"})
_IGNORED_TYPES = frozenset(
    {
        # Roles, clients, scopes, sessions and the like never change a team or
        # its members (syncd reads groups and users only).
        "REALM_ROLE", "REALM_ROLE_MAPPING", "REALM_SCOPE_MAPPING", "CLIENT",
        "CLIENT_ROLE", "CLIENT_ROLE_MAPPING", "CLIENT_SCOPE", "CLIENT_SCOPE_MAPPING",
        "CLIENT_SCOPE_CLIENT_MAPPING", "CLIENT_INITIAL_ACCESS_MODEL", "AUTH_FLOW",
        "AUTH_EXECUTION_FLOW", "AUTH_EXECUTION", "AUTHENTICATOR_CONFIG", "REQUIRED_ACTION",
        "IDENTITY_PROVIDER", "IDENTITY_PROVIDER_MAPPER", "PROTOCOL_MAPPER", "USER_SESSION",
        "USER_LOGIN_FAILURE", "CLUSTER_NODE", "AUTHORIZATION_RESOURCE_SERVER",
        "AUTHORIZATION_RESOURCE", "AUTHORIZATION_SCOPE", "AUTHORIZATION_POLICY",
        "ORGANIZATION", "ORGANIZATION_MEMBERSHIP", "USER_PROFILE",
    }
)


# The `reason` label of syncd_event_gaps_total.
GAP_REASONS = ("restart", "poll_failing", "burst", "expired", "unreadable", "federation",
               "disabled")


class EventSource(Protocol):
    """What the tail needs from Keycloak (`syncd.keycloak.KeycloakReader`)."""

    async def read_admin_events(
        self, date_from_ms: int, first: int, max_results: int
    ) -> list[dict[str, Any]]:
        """Admin events stamped at or after `date_from_ms`, oldest first."""
        ...

    async def read_oldest_admin_event(self) -> dict[str, Any] | None:
        """The oldest admin event the realm still keeps, or None."""
        ...

    async def read_newest_admin_event(self) -> dict[str, Any] | None:
        """The newest admin event, or None."""
        ...


@dataclass(frozen=True)
class AdminEvent:
    key: str  # Keycloak's id, or a fingerprint of the event
    time_ms: int
    operation: str
    resource_type: str
    path: str


def parse_event(raw: Any) -> AdminEvent:
    """One admin event from Keycloak's JSON; EventFormatError if it is not one."""
    if not isinstance(raw, Mapping):
        raise EventFormatError(f"an admin event is {type(raw).__name__}, not an object")
    stamp = raw.get("time")
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise EventFormatError("an admin event has no numeric 'time'")
    operation = raw.get("operationType")
    resource = raw.get("resourceType")
    path = raw.get("resourcePath")
    if not all(isinstance(v, str) for v in (operation, resource, path)):
        raise EventFormatError(
            "an admin event lacks operationType, resourceType or resourcePath"
        )
    assert isinstance(operation, str) and isinstance(resource, str) and isinstance(path, str)
    ident = raw.get("id")
    if not isinstance(ident, str) or not ident:
        # Keycloak before 23 gives no id; two events equal in all of these are
        # the same for syncd's purpose (they name the same subjects).
        seen = "|".join((str(stamp), operation, resource, path, _actor(raw)))
        ident = "fp:" + hashlib.sha256(seen.encode()).hexdigest()[:32]
    return AdminEvent(ident, stamp, operation, resource, path)


def _actor(raw: Mapping[str, Any]) -> str:
    details = raw.get("authDetails")
    if isinstance(details, Mapping):
        return str(details.get("userId", ""))
    return ""


@dataclass
class Hints:
    """What a batch of events asks the fast path to re-read.

    `users` are Keycloak user ids whose record and groups are re-read;
    `groups` are groups whose own record changed (created, renamed, moved,
    attributes, deleted): the group tree is re-read and their teams re-planned.
    `full` is set when only a full reconcile is safe, with the reason.
    """

    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    check_config: bool = False  # the realm's event settings changed
    full: str | None = None
    gap: str | None = None  # with `full`: one of GAP_REASONS
    events: int = 0  # events these hints come from
    oldest_ms: int | None = None
    newest_ms: int | None = None
    stamps: list[int] = field(default_factory=list)  # each event's time, for the latency

    def __bool__(self) -> bool:
        return bool(self.users or self.groups or self.full or self.check_config)

    @property
    def tree_changed(self) -> bool:
        return bool(self.groups)

    def merge(self, other: Hints) -> None:
        self.users |= other.users
        self.groups |= other.groups
        self.check_config = self.check_config or other.check_config
        if self.full is None:
            self.full, self.gap = other.full, other.gap
        self.events += other.events
        for stamp in other.stamps:
            self._stamp(stamp)

    def add(self, event: AdminEvent) -> None:
        """Read one event into hints; what cannot be read asks for a full reconcile."""
        self.events += 1
        self._stamp(event.time_ms)
        kind, path = event.resource_type, event.path
        if kind in _SUBJECTS:
            pattern, which, what = _SUBJECTS[kind]
            if (m := pattern.match(path)) is None:
                self._need_full("unreadable", f"unreadable {what} event path {path!r}")
            else:
                (self.users if which == "users" else self.groups).add(m.group(1))
        elif kind == "REALM":
            if path.startswith("events/config"):
                self.check_config = True
            elif path.startswith("partialImport") or event.operation == "ACTION":
                self._need_full("federation", "a realm import or realm action")
        elif kind in _FEDERATION_TYPES and event.operation == "ACTION":
            # An LDAP/AD synchronisation changes members without admin events.
            self._need_full("federation", "a user federation synchronisation")
        elif kind not in _IGNORED_TYPES and kind not in _FEDERATION_TYPES:
            self._need_full("unreadable", f"an admin event of unknown resource type {kind}")

    def _need_full(self, gap: str, reason: str) -> None:
        if self.full is None:
            self.full, self.gap = reason, gap

    def _stamp(self, stamp: int) -> None:
        self.stamps.append(stamp)
        self.oldest_ms = stamp if self.oldest_ms is None else min(self.oldest_ms, stamp)
        self.newest_ms = stamp if self.newest_ms is None else max(self.newest_ms, stamp)


def hints_from(events: Iterable[AdminEvent]) -> Hints:
    hints = Hints()
    for event in events:
        hints.add(event)
    return hints


class Cursor:
    """Where the tail is: the newest event time seen and the ids inside the overlap.

    Pure bookkeeping, no I/O, so the dedupe and its memory bound are tested
    directly. `since_ms` is where the next poll starts.
    """

    def __init__(self, start_ms: int, overlap_ms: int, max_remembered: int) -> None:
        self.newest_ms = start_ms
        self.overlap_ms = overlap_ms
        self.max_remembered = max_remembered
        self._seen: dict[str, int] = {}  # event key -> its time

    @property
    def since_ms(self) -> int:
        return max(0, self.newest_ms - self.overlap_ms)

    @property
    def remembered(self) -> int:
        return len(self._seen)

    def take(self, events: Sequence[AdminEvent]) -> list[AdminEvent]:
        """The events not seen before, remembering them; then forget what fell
        out of the window. OverflowError when the window holds more events
        than may be remembered: deduplication would no longer be exact."""
        fresh = [e for e in events if e.key not in self._seen]
        for event in fresh:
            self._seen[event.key] = event.time_ms
            self.newest_ms = max(self.newest_ms, event.time_ms)
        floor = self.since_ms
        self._seen = {k: t for k, t in self._seen.items() if t >= floor}
        if len(self._seen) > self.max_remembered:
            raise OverflowError(
                f"{len(self._seen)} events inside the {self.overlap_ms / 1000:g}s overlap "
                f"(at most {self.max_remembered} are remembered)"
            )
        return fresh


@dataclass
class Poll:
    """One poll's result: the hints of its new events, or the gap it found."""

    hints: Hints
    read: int = 0  # events returned, already-seen ones included
    requests: int = 0


class Tail:
    """Polls admin events from a cursor, detecting what would make it miss one.

    `start` seeds the cursor (the events already there are covered by the
    full reconcile that follows, so they are remembered, not acted upon).
    `poll` returns hints; a gap comes back as hints with `full` set, and the
    cursor is then re-seeded so the tail goes on after that reconcile.
    """

    def __init__(
        self,
        source: EventSource,
        *,
        overlap_seconds: float,
        page_size: int,
        max_pages: int,
        max_failure_seconds: float,
        max_remembered: int = 100_000,
        monotonic: Any = time.monotonic,
    ) -> None:
        self.source = source
        self.overlap_ms = int(overlap_seconds * 1000)
        self.page_size = page_size
        self.max_pages = max_pages
        self.max_failure_seconds = max_failure_seconds
        self.max_remembered = max_remembered
        self._monotonic = monotonic
        self.cursor: Cursor | None = None
        self._after_gap = False
        self.last_ok: float | None = None  # monotonic time of the last successful poll
        self.failing_since: float | None = None

    async def start(self) -> int:
        """Seed the cursor at the newest event now in Keycloak; returns events read.

        The cursor is Keycloak's own time (the newest event's stamp), never this
        machine's: with a clock behind Keycloak's by more than the overlap,
        every later event would fall outside ``dateFrom`` and be missed.
        """
        newest = await self.source.read_newest_admin_event()
        start_ms = parse_event(newest).time_ms if newest is not None else 0
        cursor = Cursor(start_ms, self.overlap_ms, self.max_remembered)
        # Seeding may read the whole window, up to what may be remembered: a
        # poll's page limit here would turn a recent burst into gap after gap.
        limit = max(self.max_pages, self.max_remembered // self.page_size)
        events, _ = await self._read(cursor.since_ms, limit)
        cursor.take(events)
        self.cursor = cursor
        self.last_ok = self._monotonic()
        self.failing_since = None
        return len(events)

    async def poll(self) -> Poll:
        """New events as hints. Read errors propagate after being timed: a tail
        failing for longer than `max_failure_seconds` reports a gap instead."""
        if self.cursor is None:
            await self.start()
            if self._after_gap:  # that gap already asked for the full reconcile
                self._after_gap = False
                return Poll(Hints(), requests=1)
            return Poll(Hints(full="the event tail (re)started", gap="restart"))
        now = self._monotonic()
        since_ok = now - self.last_ok if self.last_ok is not None else None
        try:
            # The overlap is read again on every poll; only new events count
            # against the limit of what one poll may follow.
            pages = self.max_pages + self.cursor.remembered // self.page_size + 1
            events, requests = await self._read(self.cursor.since_ms, pages)
            if since_ok is not None and since_ok * 1000 > self.overlap_ms:
                # Not polled for longer than the overlap: events might have
                # expired under the realm's retention since the cursor.
                oldest = await self.source.read_oldest_admin_event()
                requests += 1
                if oldest is not None and parse_event(oldest).time_ms > self.cursor.newest_ms:
                    return self._gap("expired", f"events expired before they were read "
                                     f"(no poll for {since_ok:.0f}s)")
        except EventFormatError as exc:
            return self._gap("unreadable", str(exc))
        except EventBurstTooLarge as exc:
            return self._gap("burst", str(exc))
        except SourceReadError:
            self.failing_since = self.failing_since if self.failing_since is not None else now
            if now - self.failing_since >= self.max_failure_seconds:
                failing = now - self.failing_since
                return self._gap(
                    "poll_failing", f"admin events could not be read for {failing:.0f}s"
                )
            raise
        self.failing_since = None
        self.last_ok = now
        try:
            fresh = self.cursor.take(events)
        except OverflowError as exc:
            return self._gap("burst", str(exc))
        return Poll(hints_from(fresh), read=len(events), requests=requests)

    def _gap(self, gap: str, reason: str) -> Poll:
        """Forget the cursor: the next poll re-seeds it (after the full reconcile)."""
        self.cursor = None
        self._after_gap = True
        self.failing_since = None
        return Poll(Hints(full=reason, gap=gap))

    async def _read(self, since_ms: int, max_pages: int) -> tuple[list[AdminEvent], int]:
        events: list[AdminEvent] = []
        first = 0
        for page_number in range(1, max_pages + 1):
            page = await self.source.read_admin_events(since_ms, first, self.page_size)
            events.extend(parse_event(raw) for raw in page)
            if len(page) < self.page_size:
                return events, page_number
            first += len(page)
        raise EventBurstTooLarge(
            f"more than {max_pages * self.page_size} admin events in one poll "
            "(events.max_pages)"
        )

