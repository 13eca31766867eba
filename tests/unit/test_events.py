"""Tailing admin events: reading them into hints, dedupe across the overlap, gaps.

The tail's bookkeeping is pure; `Tail` is driven here by an in-memory list of
events with Keycloak's query semantics (``dateFrom`` inclusive, oldest first,
``first``/``max``). The same tail against a real Keycloak is exercised in
tests/integration/test_events.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from syncd.errors import SourceReadError
from syncd.events import (
    AdminEvent,
    Cursor,
    EventFormatError,
    Hints,
    Tail,
    hints_from,
    parse_event,
)


def raw(
    stamp: int, kind: str, path: str, op: str = "UPDATE", ident: str | None = "auto"
) -> dict[str, Any]:
    event: dict[str, Any] = {"time": stamp, "resourceType": kind, "resourcePath": path,
                             "operationType": op, "authDetails": {"userId": "admin"}}
    if ident == "auto":
        event["id"] = f"e-{stamp}-{path}"
    elif ident is not None:
        event["id"] = ident
    return event


def ev(stamp: int, kind: str = "USER", path: str = "users/u1") -> AdminEvent:
    return parse_event(raw(stamp, kind, path))


# -- reading events ---------------------------------------------------------------


def test_membership_user_and_group_events_name_their_subjects() -> None:
    hints = hints_from([
        ev(1, "GROUP_MEMBERSHIP", "users/u1/groups/g1"),
        ev(2, "USER", "users/u2"),
        ev(3, "USER", "users/u3/reset-password"),
        ev(4, "GROUP", "groups/g2"),
        ev(5, "GROUP", "groups/g3/children"),
        ev(6, "REALM_ROLE_MAPPING", "users/u9/role-mappings/realm"),
        ev(7, "CLIENT", "clients/c1"),
    ])
    assert hints.users == {"u1", "u2", "u3"}
    assert hints.groups == {"g2", "g3"}  # membership events change no group record
    assert hints.full is None and hints.events == 7
    assert (hints.oldest_ms, hints.newest_ms) == (1, 7)


@pytest.mark.parametrize(
    ("kind", "path", "op", "reason"),
    [
        ("GROUP_MEMBERSHIP", "users/u1", "CREATE", "membership event path"),
        ("USER", "people/u1", "UPDATE", "user event path"),
        ("GROUP", "groups", "CREATE", "group event path"),
        ("REALM", "partialImport", "CREATE", "realm import"),
        ("USER_FEDERATION_PROVIDER", "user-storage/ldap/sync", "ACTION", "federation"),
        ("SOMETHING_NEW", "x/y", "CREATE", "unknown resource type SOMETHING_NEW"),
    ],
)
def test_what_cannot_be_followed_asks_for_a_full_reconcile(
    kind: str, path: str, op: str, reason: str
) -> None:
    hints = hints_from([parse_event(raw(1, kind, path, op))])
    assert hints.full is not None and reason in hints.full


def test_event_settings_changing_asks_for_a_check() -> None:
    hints = hints_from([ev(1, "REALM", "events/config")])
    assert hints.check_config and hints.full is None and bool(hints)


@pytest.mark.parametrize(
    "bad",
    [[], {"time": "1", "resourceType": "USER", "resourcePath": "users/a", "operationType": "X"},
     {"time": 1, "resourceType": "USER", "operationType": "UPDATE"},
     {"time": True, "resourceType": "USER", "resourcePath": "users/a", "operationType": "X"}],
)
def test_a_malformed_event_is_an_error_not_a_guess(bad: Any) -> None:
    with pytest.raises(EventFormatError):
        parse_event(bad)


def test_events_without_an_id_get_a_stable_fingerprint() -> None:
    a = parse_event(raw(5, "USER", "users/u1", ident=None))
    b = parse_event(raw(5, "USER", "users/u1", ident=None))
    c = parse_event(raw(5, "USER", "users/u2", ident=None))
    assert a.key == b.key != c.key


def test_hints_merge() -> None:
    one, two = hints_from([ev(5)]), hints_from([ev(2, "GROUP", "groups/g")])
    one.merge(two)
    assert one.users == {"u1"} and one.groups == {"g"} and one.events == 2
    assert (one.oldest_ms, one.newest_ms) == (2, 5)
    assert not Hints()


# -- the cursor ---------------------------------------------------------------------


def test_cursor_dedupes_inside_the_overlap_and_forgets_older_ids() -> None:
    cursor = Cursor(start_ms=1_000, overlap_ms=100, max_remembered=10)
    first = [ev(1_010), ev(1_050)]
    assert cursor.take(first) == first
    assert cursor.since_ms == 950
    # The next poll re-reads the overlap: the same events are not new again,
    # a late-committed one stamped before the newest is.
    late = ev(1_020, path="users/late")
    assert cursor.take([*first, late, ev(1_200)]) == [late, ev(1_200)]
    assert cursor.since_ms == 1_100
    assert cursor.remembered == 1  # only 1_200 is inside the window now


def test_cursor_refuses_to_remember_more_than_its_bound() -> None:
    cursor = Cursor(start_ms=0, overlap_ms=10_000, max_remembered=3)
    with pytest.raises(OverflowError, match="at most 3"):
        cursor.take([ev(i, path=f"users/u{i}") for i in range(1, 6)])


# -- the tail -------------------------------------------------------------------------


class Events:
    """Keycloak's admin-events listing, in memory."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = False
        self.calls = 0

    async def read_admin_events(
        self, date_from_ms: int, first: int, max_results: int
    ) -> list[dict[str, Any]]:
        self.calls += 1
        if self.fail:
            raise SourceReadError("Keycloak GET /admin-events failed: connection refused")
        chosen = sorted((e for e in self.events if e["time"] >= date_from_ms),
                        key=lambda e: e["time"])
        return chosen[first:first + max_results]

    async def read_oldest_admin_event(self) -> dict[str, Any] | None:
        return min(self.events, key=lambda e: e["time"]) if self.events else None

    async def read_newest_admin_event(self) -> dict[str, Any] | None:
        return max(self.events, key=lambda e: e["time"]) if self.events else None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tail(source: Events, clock: Clock, **kw: Any) -> Tail:
    options: dict[str, Any] = dict(overlap_seconds=1.0, page_size=10, max_pages=3,
                                   max_failure_seconds=30.0)
    options.update(kw)
    return Tail(source, monotonic=clock, **options)


def test_the_tail_follows_new_events_once_each() -> None:
    source, clock = Events(), Clock()
    source.events = [raw(99_000, "USER", "users/before")]
    t = tail(source, clock)
    asyncio.run(t.start())  # what was there before is the full reconcile's
    source.events.append(raw(100_200, "GROUP_MEMBERSHIP", "users/u1/groups/g1"))
    clock.now = 100.5
    assert asyncio.run(t.poll()).hints.users == {"u1"}
    clock.now = 101.0
    # Stamped before the newest seen (committed late) but inside the overlap.
    source.events.append(raw(100_150, "USER", "users/late"))
    poll = asyncio.run(t.poll())
    assert poll.hints.users == {"late"} and poll.read == 2
    clock.now = 101.5
    assert not asyncio.run(t.poll()).hints


def test_a_burst_larger_than_a_poll_may_read_is_a_gap() -> None:
    source, clock = Events(), Clock()
    t = tail(source, clock)
    asyncio.run(t.start())
    source.events = [raw(100_001 + i, "USER", f"users/u{i}") for i in range(41)]
    poll = asyncio.run(t.poll())
    assert poll.hints.full is not None and "more than 40" in poll.hints.full
    # The cursor is re-seeded afterwards: the tail goes on after the full reconcile.
    again = asyncio.run(t.poll())
    assert not again.hints  # re-seeded quietly: the gap asked for the reconcile already
    assert not asyncio.run(t.poll()).hints


def test_failing_polls_raise_then_become_a_gap_after_the_limit() -> None:
    source, clock = Events(), Clock()
    t = tail(source, clock, max_failure_seconds=10.0)
    asyncio.run(t.start())
    source.fail = True
    with pytest.raises(SourceReadError):
        asyncio.run(t.poll())
    clock.now += 11
    poll = asyncio.run(t.poll())
    assert poll.hints.full is not None and "could not be read for 11s" in poll.hints.full


def test_events_expired_while_not_polling_are_a_gap() -> None:
    source, clock = Events(), Clock()
    t = tail(source, clock, overlap_seconds=1.0)
    asyncio.run(t.start())
    clock.now += 5  # no poll for longer than the overlap...
    source.events = [raw(104_000, "USER", "users/u1")]  # ...and older events expired
    poll = asyncio.run(t.poll())
    assert poll.hints.full is not None and "expired" in poll.hints.full


def test_a_malformed_event_from_the_server_is_a_gap() -> None:
    source, clock = Events(), Clock()
    t = tail(source, clock)
    asyncio.run(t.start())
    source.events = [{"time": 100_500, "resourceType": "USER"}]
    poll = asyncio.run(t.poll())
    assert poll.hints.full is not None


def test_the_cursor_follows_keycloaks_clock_not_this_machines() -> None:
    """Keycloak's clock an hour behind ours: its events are still followed,
    because the cursor starts at the newest event's own stamp."""
    source, clock = Events(), Clock()
    clock.now = 1_800_000_000.0
    hour_ago = int((clock.now - 3600) * 1000)
    source.events = [raw(hour_ago, "USER", "users/old")]
    t = tail(source, clock)
    asyncio.run(t.start())
    source.events.append(raw(hour_ago + 500, "GROUP_MEMBERSHIP", "users/u7/groups/g1"))
    clock.now += 0.5
    assert asyncio.run(t.poll()).hints.users == {"u7"}
