"""The AIMD concurrency controller (`syncd.http.AdaptiveLimit`) with a clock the
test moves: halving once per overload episode, growing by one per round of good
answers, between 1 and the configured ceiling; waiters get slots as they free."""

from __future__ import annotations

import asyncio

from syncd.http import AdaptiveLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_starts_at_the_ceiling_halves_on_overload_and_never_below_one() -> None:
    clock = Clock()
    limit = AdaptiveLimit(8, clock=clock)
    assert limit.current == 8
    for expected in (4, 2, 1, 1):
        clock.now += 1
        limit.record(clock.now - 0.5, overloaded=True)
        assert limit.current == expected


def test_one_episode_halves_once() -> None:
    """Eight requests sent together, all answered 500: one halving, not eight."""
    clock = Clock()
    limit = AdaptiveLimit(8, clock=clock)
    clock.now = 10.0
    for _ in range(8):
        limit.record(9.0, overloaded=True)  # all sent at t=9, before the decrease
    assert limit.current == 4
    limit.record(10.5, overloaded=True)  # sent after the decrease: a new episode
    assert limit.current == 2


def test_grows_by_one_per_round_of_good_answers_up_to_the_ceiling() -> None:
    clock = Clock()
    changes: list[int] = []
    limit = AdaptiveLimit(8, clock=clock, on_change=changes.append)
    limit.record(0.0, overloaded=True)
    limit.record(0.0, overloaded=True)  # same episode
    assert limit.current == 4
    for _ in range(5):  # a round of answers at limit 4 (1/4 each, as the limit grows): +1
        limit.record(1.0, overloaded=False)
    assert limit.current == 5
    for _ in range(200):
        limit.record(2.0, overloaded=False)
    assert limit.current == 8 and limit.limit == 8.0
    assert changes == [4, 5, 6, 7, 8]


async def test_a_lower_limit_holds_requests_back_and_frees_them_in_order() -> None:
    clock = Clock()
    limit = AdaptiveLimit(2, clock=clock)
    first = await limit.acquire()
    await limit.acquire()
    clock.now = 1.0
    waiting = [asyncio.ensure_future(limit.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    limit.release(first, overloaded=True)  # halves to 1: one in flight already
    await asyncio.sleep(0)
    assert limit.current == 1 and not any(w.done() for w in waiting)
    limit.release(first, overloaded=None)  # the second request ends (a 429: neutral)
    await asyncio.sleep(0)
    assert waiting[0].done() and not waiting[1].done()
    assert limit.in_flight == 1
    waiting[1].cancel()
    await asyncio.sleep(0)
    limit.release(0.0, overloaded=False)
    assert limit.in_flight == 0
