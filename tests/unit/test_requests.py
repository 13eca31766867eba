"""The request queue: merging, a Full winning over scoped requests, waiting."""

from __future__ import annotations

import asyncio

from syncd.events import Hints
from syncd.requests import Full, RequestQueue, Scoped


def hints(users: set[str] | None = None, groups: set[str] | None = None,
          stamps: tuple[int, ...] = ()) -> Hints:
    h = Hints(users=set(users or ()), groups=set(groups or ()), events=len(stamps))
    h.stamps.extend(stamps)
    return h


def test_scoped_requests_merge_into_one() -> None:
    queue = RequestQueue()
    queue.put_scoped(hints({"a"}, stamps=(1,)))
    queue.put_scoped(hints({"b"}, {"g"}, stamps=(2,)))
    request = queue.take()
    assert isinstance(request, Scoped)
    assert request.hints.users == {"a", "b"} and request.hints.groups == {"g"}
    assert request.hints.events == 2
    assert queue.take() is None and queue.empty


def test_a_full_request_replaces_the_scoped_ones_and_keeps_their_events() -> None:
    queue = RequestQueue()
    queue.put_scoped(hints({"a"}, stamps=(1,)))
    assert queue.put_full("gap")
    queue.put_scoped(hints({"b"}, stamps=(2,)))  # after the full: covered by it
    assert not queue.put_full("schedule")  # one full pending is enough
    request = queue.take()
    assert isinstance(request, Full)
    assert request.reason == "gap"
    assert sorted(request.hints.stamps) == [1, 2]  # for the propagation metrics
    assert queue.take() is None


def test_get_waits_for_a_request() -> None:
    async def scenario() -> object:
        queue = RequestQueue()
        waiter = asyncio.create_task(queue.get())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        queue.put_full("start")
        return await asyncio.wait_for(waiter, 1)

    request = asyncio.run(scenario())
    assert isinstance(request, Full) and request.reason == "start"
