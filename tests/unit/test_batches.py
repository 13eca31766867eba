"""The batch splitter (`syncd.apply.write_in_batches`) against an in-memory target
that behaves like the proxy's member_add under load: a batch larger than what one
transaction can take in time fails (rolled back, or applied with its answer lost),
smaller ones go through. The properties: everything planned ends done or failed,
nothing is sent twice once it is in place, and the size that worked is kept."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from syncd.apply import BatchSize, write_in_batches
from syncd.errors import TargetWriteError, WriteUncertain
from syncd.http import RetryBudget


class Team:
    """Members held, and every batch sent, for the assertions."""

    def __init__(self, capacity: int, *, applies_then_fails: bool = False,
                 fail_always: frozenset[str] = frozenset()) -> None:
        self.capacity = capacity
        self.applies_then_fails = applies_then_fails
        self.fail_always = fail_always
        self.members: set[str] = set()
        self.sent: list[list[str]] = []
        self.reads = 0

    async def send(self, chunk: list[str]) -> None:
        self.sent.append(list(chunk))
        too_big = len(chunk) > self.capacity or bool(self.fail_always & set(chunk))
        if too_big and not self.applies_then_fails:
            raise WriteUncertain("HTTP 500: Transaction already closed", status=500,
                                 rolled_back=True)
        self.members.update(m for m in chunk if m not in self.fail_always)
        if too_big:
            raise WriteUncertain("timed out (ReadTimeout)", kind="transport")

    async def present(self) -> set[Hashable] | None:
        self.reads += 1
        return set(self.members)


async def run(team: Team, items: list[str], size: BatchSize, budget: int = 100) -> tuple:
    done: list[str] = []
    outcome = await write_in_batches(
        items, team.send, key=lambda m: m, present=team.present, size=size,
        budget=RetryBudget(budget), on_done=done.extend,
    )
    return done, outcome


async def test_rolled_back_batches_are_halved_until_they_fit_and_the_size_is_kept() -> None:
    team, size = Team(capacity=30), BatchSize(100)
    items = [f"u{i}" for i in range(250)]
    done, outcome = await run(team, items, size)
    assert sorted(done) == sorted(items) and not outcome.failed
    assert team.members == set(items)
    assert size.size == 25  # 100 -> 50 -> 25, and kept
    assert outcome.splits == 2
    # Rolled back: nothing to learn from a re-read.
    assert team.reads == 0
    # After the size that worked was found, every batch had it.
    assert all(len(b) <= 25 for b in team.sent[2:])


async def test_applied_then_lost_answers_are_reread_and_nothing_is_sent_twice() -> None:
    team, size = Team(capacity=30, applies_then_fails=True), BatchSize(100)
    items = [f"u{i}" for i in range(120)]
    done, outcome = await run(team, items, size)
    assert sorted(done) == sorted(items) and not outcome.failed
    assert team.reads >= 1
    sent = [m for batch in team.sent for m in batch]
    assert len(sent) == len(set(sent)) == len(items)  # the lost batch was found applied
    assert outcome.retried == 0  # nothing was missing after the re-read


async def test_a_member_that_keeps_failing_alone_fails_and_the_rest_is_done() -> None:
    team, size = Team(capacity=100, fail_always=frozenset({"u7"})), BatchSize(16)
    items = [f"u{i}" for i in range(40)]
    done, outcome = await run(team, items, size)
    assert [item for item, _ in outcome.failed] == ["u7"]
    assert sorted(done) == sorted(set(items) - {"u7"})
    assert sum(batch == ["u7"] for batch in team.sent) == 3  # SINGLE_ATTEMPTS alone
    assert size.size == 1


async def test_an_empty_budget_ends_the_retries_with_the_last_error() -> None:
    team, size = Team(capacity=10), BatchSize(100)
    items = [f"u{i}" for i in range(100)]
    done, outcome = await run(team, items, size, budget=1)
    # One retry allowed: 100 failed, the retry of 50 failed; everything after is failed.
    assert done == []
    assert len(outcome.failed) == 100
    assert all(isinstance(e, WriteUncertain) for _, e in outcome.failed)


async def test_a_refusal_fails_its_batch_without_retrying() -> None:
    sent: list[list[int]] = []

    async def send(chunk: list[int]) -> None:
        sent.append(chunk)
        raise TargetWriteError("HTTP 400: bad", status=400)

    done: list[int] = []
    outcome = await write_in_batches(
        list(range(5)), send, key=lambda i: i, present=None, size=BatchSize(100),
        budget=RetryBudget(10), on_done=done.extend,
    )
    assert sent == [[0, 1, 2, 3, 4]] and done == [] and len(outcome.failed) == 5


@pytest.mark.parametrize("failed,expected", [(100, 50), (7, 3), (1, 1)])
def test_batch_size_halves_to_half_the_failed_batch_never_grows(failed: int, expected: int) -> None:
    size = BatchSize(100)
    assert size.shrink(failed) == expected
    assert size.shrink(100) == expected  # a larger failed batch never grows it back


async def test_a_stop_request_starts_no_further_batch() -> None:
    team, size = Team(capacity=100), BatchSize(10)
    done: list[str] = []
    outcome = await write_in_batches(
        [f"u{i}" for i in range(50)], team.send, key=lambda m: m, present=team.present,
        size=size, budget=RetryBudget(5), on_done=done.extend,
        stopped=lambda: len(team.sent) >= 2,
    )
    assert len(team.sent) == 2 and len(done) == 20 and not outcome.failed
