"""Executing a plan: phase by phase, concurrently within a phase, one log event each.

The applier never re-plans. It groups what LiteLLM can take in one request
(members added to one team, keys deleted together), records each operation as
done or failed without stopping the others, and skips operations whose
prerequisite failed (no member_add for a user whose creation failed). A run
with failures ends as `partial`; the next run's plan picks up what is left.

Every write is safe to send twice: a create that meets "already exists" with
syncd's own object is done (``LiteLLMClient.create_*``), a duplicate member_add
or a delete of what is gone is done. A proxy that refuses the team admin role
(no enterprise licence) is a configuration problem, not a per-member failure:
the first refusal is recorded once (`ApplyResult.config_error`), later role
changes to admin are not sent, and nothing is re-planned here: members were
added as `user` by the plan and keep their access. A stop request (SIGTERM)
lets the writes in flight finish and starts no new ones; a cancellation
records the operations it cut off as interrupted, so the summary is honest.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Generic, Protocol, TypeVar, assert_never

import structlog

from syncd.errors import TargetWriteError, WriteUncertain
from syncd.http import RetryBudget
from syncd.metrics import Metrics
from syncd.model import Role, TeamSettings
from syncd.operations import (
    AddMember,
    BlockKey,
    BlockTeam,
    BlockUser,
    ChangeMemberRole,
    CreateTeam,
    CreateUser,
    DeleteKey,
    DeleteTeam,
    DeleteUser,
    LinkUser,
    Op,
    ReleaseEmail,
    RemoveMember,
    UnblockKey,
    UnblockTeam,
    UnblockUser,
    UpdateTeam,
    UpdateUserMetadata,
    UpdateUserProfile,
    thaw,
)

log = structlog.get_logger("syncd.apply")

BATCH = 100  # members per member_add, keys per key/delete, until a batch fails
# Attempts of one operation alone (a batch of one) answered 5xx or timing out,
# before it is a failure of this run; each retry also takes from the run's budget.
SINGLE_ATTEMPTS = 3
# Op groups in flight at once, at most. Starting one task per operation
# for 10,000 users only holds 10,000 suspended requests in memory. The Applier
# runs as many workers as the HTTP client may send at once (litellm.concurrency),
# so an operation that has started is one whose request is on the wire: a stop
# request then leaves no queue of "started" operations behind.
IN_FLIGHT = 64


LICENCE_REFUSED = (
    "litellm.enterprise_license is true but the proxy refused role admin as an enterprise "
    "feature; set it to false"
)


@dataclass
class ApplyResult:
    done: list[Op] = field(default_factory=list)
    failed: list[tuple[Op, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Found done already ("already exists" with syncd's own object); also in `done`.
    existed: int = 0
    # Not applied because the proxy refused the admin role (licence): one problem.
    refused: list[Op] = field(default_factory=list)
    refusal: str | None = None  # LiteLLM's own words, from the first refusal
    # Cut off by a cancellation while their request was in flight: outcome unknown.
    interrupted: list[Op] = field(default_factory=list)
    not_started: int = 0  # left out because the run was asked to stop
    # A batched write answered 5xx or timing out was re-read and its missing part
    # sent again in halves: batches split, and operations sent again (each time).
    batches_split: int = 0
    retried: int = 0

    @property
    def config_error(self) -> str | None:
        """The one error a licence refusal becomes (None when there was none)."""
        if self.refusal is None:
            return None
        return (
            f"{LICENCE_REFUSED} ({len(self.refused)} team admin role change(s) not applied; "
            f"those members keep their access as role user). LiteLLM said: {self.refusal}"
        )


T = TypeVar("T")


class BatchSize:
    """How many members (or keys) one batched write carries, for the whole run.

    It starts at `BATCH`. A batch answered 5xx or timing out halves it (to half of
    the failed batch at most, so that concurrent failures of one overload halve it
    once, not once each); it never grows back within the run: the proxy's
    transaction limit does not loosen, and the size that worked keeps working.
    """

    def __init__(self, start: int = BATCH) -> None:
        self.size = max(1, start)

    def shrink(self, failed: int) -> int:
        self.size = max(1, min(self.size, failed // 2))
        return self.size


@dataclass
class BatchOutcome(Generic[T]):
    """What a batched write left undone, and what it cost to get the rest through."""

    failed: list[tuple[T, TargetWriteError]] = field(default_factory=list)
    splits: int = 0  # failed batches whose missing part was sent again in halves
    retried: int = 0  # items sent again (each time they were)


async def write_in_batches(
    items: Sequence[T],
    send: Callable[[list[T]], Awaitable[None]],
    *,
    key: Callable[[T], Hashable],
    present: Callable[[], Awaitable[set[Hashable] | None]] | None,
    size: BatchSize,
    budget: RetryBudget,
    on_done: Callable[[list[T]], None],
    on_split: Callable[[int, int, WriteUncertain], None] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> BatchOutcome[T]:
    """Send `items` in batches of `size.size`, one batch at a time, never losing or
    repeating one.

    A batch answered with a refusal (4xx) fails as a whole: retrying cannot change
    it. A batch whose outcome is uncertain (5xx, timeout) is not final: unless the
    answer says its transaction was rolled back, `present()` re-reads which items
    the target now holds (a member in the team), and those are done, never sent
    again; the rest goes back to the front of the queue and is sent in halves,
    down to single items, each resend taking one retry from the run's `budget`.
    A single item that still fails after `SINGLE_ATTEMPTS` attempts, or any item
    once the budget is spent, fails with the last error. `on_done` is called as
    items are known done, so a cancellation loses no progress. Once `stopped()`
    (a stop request), no further batch starts: the rest counts as not started."""
    outcome: BatchOutcome[T] = BatchOutcome()
    pending: deque[T] = deque(items)
    attempts: dict[Hashable, int] = {}
    while pending and not stopped():
        chunk = [pending.popleft() for _ in range(min(size.size, len(pending)))]
        try:
            await send(chunk)
        except WriteUncertain as exc:
            error = exc
        except TargetWriteError as exc:
            outcome.failed.extend((item, exc) for item in chunk)
            continue
        else:
            on_done(chunk)
            continue
        missing = chunk
        if present is not None and not error.rolled_back:
            try:
                have = await present()
            except TargetWriteError:
                have = None  # still unknown: resend it all; what is there counts as done
            if have is not None:
                applied = [item for item in chunk if key(item) in have]
                if applied:
                    on_done(applied)
                missing = [item for item in chunk if key(item) not in have]
        if not missing:
            continue
        if len(missing) == 1:
            k = key(missing[0])
            attempts[k] = attempts.get(k, 1) + 1
            if attempts[k] > SINGLE_ATTEMPTS:
                outcome.failed.append((missing[0], error))
                continue
        if not budget.take():
            outcome.failed.extend((item, error) for item in missing)
            continue
        if len(chunk) > 1:
            outcome.splits += 1
            new_size = size.shrink(len(chunk))
            if on_split is not None:
                on_split(len(chunk), new_size, error)
        outcome.retried += len(missing)
        pending.extendleft(reversed(missing))
    return outcome


class Writes(Protocol):
    """The LiteLLM writes the applier makes (`syncd.litellm.LiteLLMClient`), one
    method per kind of change; unit tests give it an in-memory LiteLLM. Each
    raises `TargetWriteError` (`WriteUncertain` when the answer was lost) and
    is idempotent, so the applier may send it again."""

    async def create_user(self, user_id: str, email: str | None, username: str,
                          metadata: Mapping[str, Any] | None = None) -> bool: ...
    async def update_user_metadata(self, user_id: str, metadata: Mapping[str, Any]) -> None: ...
    async def update_user_profile(self, user_id: str, fields: Mapping[str, Any]) -> None: ...
    async def release_email(self, user_id: str, metadata: Mapping[str, Any], to_user_id: str,
                            to_email: str) -> None: ...
    async def create_team(self, team_id: str, alias: str, settings: TeamSettings,
                          metadata: Mapping[str, Any]) -> bool: ...
    async def update_team(self, team_id: str, fields: Mapping[str, Any],
                          metadata: Mapping[str, Any]) -> None: ...
    async def block_team(self, team_id: str, metadata: Mapping[str, Any]) -> None: ...
    async def unblock_team(self, team_id: str, metadata: Mapping[str, Any]) -> None: ...
    async def delete_team(self, team_id: str) -> None: ...
    async def add_members(self, team_id: str, members: Sequence[tuple[str, Role]]) -> None: ...
    async def team_member_ids(self, team_id: str) -> set[str] | None: ...
    async def change_member_role(self, team_id: str, user_id: str, role: Role) -> None: ...
    async def remove_member(self, team_id: str, user_id: str) -> None: ...
    async def delete_keys(self, tokens: Sequence[str]) -> None: ...
    async def block_key(self, token: str, metadata: Mapping[str, Any]) -> None: ...
    async def unblock_key(self, token: str, unblock: bool,
                          metadata: Mapping[str, Any]) -> None: ...
    async def delete_user(self, user_id: str) -> None: ...


class Applier:
    def __init__(
        self, client: Writes, metrics: Metrics, budget: RetryBudget,
        stop: asyncio.Event | None = None, in_flight: int = IN_FLIGHT,
    ) -> None:
        """`budget` is the run's retry budget: re-sending parts of failed batches
        spends from it like HTTP retries do."""
        self.client = client
        self.metrics = metrics
        self.stop = stop
        self.in_flight = max(1, min(in_flight, IN_FLIGHT))
        self.budget = budget
        self.batch = BatchSize()
        metrics.batch_size.set(self.batch.size)
        self.result = ApplyResult()
        self.failed_users: set[str] = set()
        self.failed_teams: set[str] = set()
        self.failed_adds: set[tuple[str, str]] = set()
        # One member write at a time per team: the proxy serialises them on the
        # team's advisory lock inside each write's transaction, so two concurrent
        # batches to one team only wait on each other towards the time limit.
        self.team_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    async def apply(self, operations: Sequence[Op]) -> ApplyResult:
        # Within the membership phase, role changes wait for the adds: a new admin
        # is added as user, then promoted (see the planner).
        for _, phase_ops in groupby(
            operations, key=lambda op: (op.PHASE, isinstance(op, ChangeMemberRole))
        ):
            if self.stopped:
                break
            groups = self._groups(list(phase_ops))
            # The first admin role change goes alone: a proxy without a licence
            # refuses it, and then the others are not sent at all.
            probe = next((g for g in groups if all(_wants_admin(op) for op in g)), None)
            if probe is not None and self.result.refusal is None:
                groups.remove(probe)
                await self._run_group(probe)
            await self._run_groups(groups)
        if self.stopped:
            r = self.result
            seen = {id(op) for op in (*r.done, *r.refused, *r.interrupted)}
            seen.update(id(op) for op, _ in r.failed)
            r.not_started += sum(1 for op in operations if id(op) not in seen)
        return self.result

    async def _run_groups(self, groups: list[list[Op]]) -> None:
        """Run a phase's groups concurrently, in order, at most IN_FLIGHT at a time."""
        pending = iter(groups)

        async def worker() -> None:
            for group in pending:
                if self.stopped:  # no new write; those in flight finish
                    return
                await self._run_group(group)

        await asyncio.gather(*(worker() for _ in range(min(self.in_flight, len(groups)))))

    def _groups(self, ops: list[Op]) -> list[list[Op]]:
        """Batchable operations together; everything else on its own.

        A team's member adds are one group, sent batch after batch by one worker,
        so concurrency is spread across teams, never within one. The largest
        groups start first: a team of 1,200 is twelve batches in a row, and
        starting it last would leave it running alone at the end."""
        adds: dict[tuple[str, str], list[Op]] = defaultdict(list)
        deletes: list[Op] = []
        singles: list[list[Op]] = []
        for op in ops:
            if isinstance(op, AddMember):
                adds[(op.team_id, op.role)].append(op)
            elif isinstance(op, DeleteKey):
                deletes.append(op)
            else:
                singles.append([op])
        groups = sorted(adds.values(), key=len, reverse=True)
        groups.extend(deletes[i : i + BATCH] for i in range(0, len(deletes), BATCH))
        groups.extend(singles)
        return groups

    async def _run_group(self, ops: list[Op]) -> None:
        if self.result.refusal is not None:  # the proxy said no once: do not ask again
            for op in [op for op in ops if _wants_admin(op)]:
                self.result.refused.append(op)
                ops.remove(op)
        runnable = [op for op in ops if not self._blocked_by_failure(op)]
        for op in ops:
            if op not in runnable:
                self._fail(op, "skipped: a prerequisite failed earlier in this run")
        if not runnable:
            return
        first = runnable[0]
        existed = False
        try:
            if isinstance(first, AddMember):
                async with self.team_locks[first.team_id]:
                    await self._add_members([op for op in runnable if isinstance(op, AddMember)])
                return
            if isinstance(first, DeleteKey):
                await self._delete_keys([op for op in runnable if isinstance(op, DeleteKey)])
                return
            if isinstance(first, RemoveMember | ChangeMemberRole):
                async with self.team_locks[first.team_id]:
                    existed = await self._single_retried(first)
            else:
                existed = await self._single_retried(first)
        except TargetWriteError as exc:
            if exc.kind == "premium" and all(_wants_admin(op) for op in runnable):
                self._refused(runnable, str(exc))
                return
            for op in runnable:
                self._fail(op, str(exc))
            return
        except asyncio.CancelledError:
            finished = {id(op) for op in self.result.done}
            finished.update(id(op) for op, _ in self.result.failed)
            cut_off = [op for op in runnable if id(op) not in finished]
            self.result.interrupted.extend(cut_off)
            log.warning("change_interrupted", ops=len(cut_off), op=first.KIND, **first.ids())
            raise
        for op in runnable:
            self._done(op, existed=existed)

    def _blocked_by_failure(self, op: Op) -> bool:
        if isinstance(op, ChangeMemberRole) and (op.team_id, op.user_id) in self.failed_adds:
            return True
        if isinstance(op, AddMember | ChangeMemberRole):
            return op.user_id in self.failed_users or op.team_id in self.failed_teams
        if isinstance(op, ReleaseEmail):  # never an address for a user that was not made
            return op.to_user_id in self.failed_users
        return False

    def _refused(self, ops: list[Op], error: str) -> None:
        """The proxy refused the admin role: a licence problem, reported once per run."""
        first = self.result.refusal is None
        if first:
            self.result.refusal = error
        self.result.refused.extend(ops)
        if first:
            log.error("licence_refused", error=LICENCE_REFUSED, litellm=error, **ops[0].ids())

    async def _add_members(self, ops: list[AddMember]) -> None:
        """A team's adds for one role, batch after batch (see `write_in_batches`).
        The role is the plan's: a refusal of admin (no licence) is not turned into
        another role here. A batch that failed uncertainly is checked against
        ``/team/info``: members found there are done, the rest is sent again."""
        team_id = ops[0].team_id

        async def send(chunk: list[AddMember]) -> None:
            await self.client.add_members(team_id, [(op.user_id, op.role) for op in chunk])

        async def present() -> set[Hashable] | None:
            return set(await self.client.team_member_ids(team_id) or ())

        await self._batched(ops, send, key=lambda op: op.user_id, present=present,
                            what={"op": "member_add", "team_id": team_id})

    async def _delete_keys(self, ops: list[DeleteKey]) -> None:
        """Keys deleted together. Nothing needs re-reading after an uncertain failure:
        a resent delete of a key that is gone is done (LiteLLM's 404, `gone_ok`)."""

        async def send(chunk: list[DeleteKey]) -> None:
            await self.client.delete_keys([op.token for op in chunk])

        await self._batched(ops, send, key=lambda op: op.token, present=None,
                            what={"op": "key_delete"})

    async def _batched(
        self,
        ops: Sequence[T],
        send: Callable[[list[T]], Awaitable[None]],
        *,
        key: Callable[[T], Hashable],
        present: Callable[[], Awaitable[set[Hashable] | None]] | None,
        what: dict[str, str],
    ) -> None:
        metrics = self.metrics

        def on_done(chunk: list[T]) -> None:
            for op in chunk:
                assert isinstance(op, AddMember | DeleteKey)
                self._done(op)

        def on_split(failed: int, size: int, error: WriteUncertain) -> None:
            metrics.batches_split.labels(op=what["op"]).inc()
            metrics.batch_size.set(size)
            log.warning("batch_split", failed_batch=failed, batch_size=size, error=str(error),
                        rolled_back=error.rolled_back, **what)

        outcome = await write_in_batches(
            ops, send, key=key, present=present, size=self.batch, budget=self.budget,
            on_done=on_done, on_split=on_split, stopped=lambda: self.stopped,
        )
        self.result.batches_split += outcome.splits
        self.result.retried += outcome.retried
        refusals = [
            (op, exc) for op, exc in outcome.failed
            if exc.kind == "premium" and isinstance(op, AddMember) and _wants_admin(op)
        ]
        if refusals:
            self._refused([op for op, _ in refusals if isinstance(op, AddMember)],
                          str(refusals[0][1]))
        refused = {id(op) for op, _ in refusals}
        for op, exc in outcome.failed:
            if id(op) not in refused:
                assert isinstance(op, AddMember | DeleteKey)
                self._fail(op, str(exc))

    async def _single_retried(self, op: Op) -> bool:
        """`_single`, sent again when its answer was uncertain (5xx, timeout): every
        write is idempotent, and a create resent after a lost answer meets its own
        object ("already exists", checked to be syncd's). Within the run's budget,
        at most `SINGLE_ATTEMPTS` attempts."""
        attempt = 1
        while True:
            try:
                return await self._single(op)
            except WriteUncertain:
                if attempt >= SINGLE_ATTEMPTS or not self.budget.take():
                    raise
                attempt += 1
                self.result.retried += 1

    async def _single(self, op: Op) -> bool:
        """Apply one operation; True when a create found its object already there."""
        c = self.client
        match op:
            case CreateUser():
                return not await c.create_user(
                    op.user_id, op.email, op.username, thaw(op.metadata)
                )
            case UpdateUserMetadata() | UnblockUser() | BlockUser() | LinkUser():
                await c.update_user_metadata(op.user_id, thaw(op.metadata))
            case UpdateUserProfile():
                await c.update_user_profile(
                    op.user_id, {name: new for name, _, new in op.changes}
                )
            case CreateTeam():
                return not await c.create_team(
                    op.team_id, op.alias, op.settings, thaw(op.metadata)
                )
            case UpdateTeam():
                fields = {name: thaw(new) for name, _, new in op.changes if name != "metadata"}
                await c.update_team(op.team_id, fields, thaw(op.metadata))
            case UnblockTeam():
                await c.unblock_team(op.team_id, thaw(op.metadata))
            case AddMember():  # batched by _run_group; one alone is a batch of one
                await self._add_members([op])
            case ChangeMemberRole():
                await c.change_member_role(op.team_id, op.user_id, op.new)
            case UnblockKey():
                await c.unblock_key(op.token, op.unblock, thaw(op.metadata))
            case RemoveMember():
                await c.remove_member(op.team_id, op.user_id)
            case DeleteKey():  # batched by _run_group, like AddMember
                await c.delete_keys([op.token])
            case BlockKey():
                await c.block_key(op.token, thaw(op.metadata))
            case BlockTeam():
                await c.block_team(op.team_id, thaw(op.metadata))
            case DeleteTeam():
                await c.delete_team(op.team_id)
            case DeleteUser():
                await c.delete_user(op.user_id)
            case ReleaseEmail():
                await c.release_email(op.user_id, thaw(op.metadata), op.to_user_id, op.to_email)
            case _:
                assert_never(op)
        return False

    def _done(self, op: Op, *, existed: bool = False) -> None:
        self.result.done.append(op)
        # existed: a lost answer, or another run; the object is syncd's and in place.
        self.result.existed += existed
        flag = {"already_existed": True} if existed else {}
        log.info("change", op=op.KIND, detail=op.describe(), **flag, **op.ids())

    def _fail(self, op: Op, error: str) -> None:
        if isinstance(op, CreateUser):
            self.failed_users.add(op.user_id)
        if isinstance(op, CreateTeam):
            self.failed_teams.add(op.team_id)
        if isinstance(op, AddMember):
            self.failed_adds.add((op.team_id, op.user_id))
        self.result.failed.append((op, error))
        log.error("change_failed", op=op.KIND, detail=op.describe(), error=error, **op.ids())


def _wants_admin(op: Op) -> bool:
    """An operation that only a licensed proxy accepts: the team admin role."""
    if isinstance(op, AddMember):
        return op.role == "admin"
    return isinstance(op, ChangeMemberRole) and op.new == "admin"
