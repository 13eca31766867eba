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
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import assert_never

import structlog

from syncd.errors import TargetWriteError
from syncd.litellm import LiteLLMClient
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

BATCH = 100  # members per member_add, keys per key/delete
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

    @property
    def config_error(self) -> str | None:
        """The one error a licence refusal becomes (None when there was none)."""
        if self.refusal is None:
            return None
        return (
            f"{LICENCE_REFUSED} ({len(self.refused)} team admin role change(s) not applied; "
            f"those members keep their access as role user). LiteLLM said: {self.refusal}"
        )


class Applier:
    def __init__(
        self, client: LiteLLMClient, stop: asyncio.Event | None = None,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self.client = client
        self.stop = stop
        self.in_flight = max(1, min(in_flight, IN_FLIGHT))
        self.result = ApplyResult()
        self.failed_users: set[str] = set()
        self.failed_teams: set[str] = set()
        self.failed_adds: set[tuple[str, str]] = set()

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
        """Batchable operations together; everything else on its own."""
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
        groups = singles
        for batch in adds.values():
            groups.extend(batch[i : i + BATCH] for i in range(0, len(batch), BATCH))
        groups.extend(deletes[i : i + BATCH] for i in range(0, len(deletes), BATCH))
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
                await self._add_members([op for op in runnable if isinstance(op, AddMember)])
            elif isinstance(first, DeleteKey):
                tokens = [op.token for op in runnable if isinstance(op, DeleteKey)]
                await self.client.delete_keys(tokens)
            else:
                existed = await self._single(first)
        except TargetWriteError as exc:
            if exc.kind == "premium" and all(_wants_admin(op) for op in runnable):
                self._refused(runnable, str(exc))
                return
            for op in runnable:
                self._fail(op, str(exc))
            return
        except asyncio.CancelledError:
            self.result.interrupted.extend(runnable)
            log.warning("change_interrupted", ops=len(runnable), op=first.KIND, **first.ids())
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
        """One member_add per team and role. The role is the plan's: a refusal of
        admin (no licence) is not turned into another role here."""
        team_id = ops[0].team_id
        await self.client.add_members(team_id, [(op.user_id, op.role) for op in ops])

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
