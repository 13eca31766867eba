"""Executing a plan: phase by phase, concurrently within a phase, one log event each.

The applier never re-plans. It groups what LiteLLM can take in one request
(members added to one team, keys deleted together), records each operation as
done or failed without stopping the others, and skips operations whose
prerequisite failed (no member_add for a user whose creation failed). A run
with failures ends as `partial`; the next run's plan picks up what is left.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby

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
    Operation,
    RemoveMember,
    UnblockKey,
    UnblockTeam,
    UnblockUser,
    UpdateTeam,
    UpdateUserMetadata,
)
from syncd.report import describe

log = structlog.get_logger("syncd.apply")

BATCH = 100  # members per member_add, keys per key/delete
# Operation groups in flight at once. The HTTP client already bounds concurrent
# requests (litellm.concurrency, at most 64); starting one task per operation
# for 10,000 users only holds 10,000 suspended requests in memory.
IN_FLIGHT = 64


@dataclass
class ApplyResult:
    done: list[Operation] = field(default_factory=list)
    failed: list[tuple[Operation, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Applier:
    def __init__(self, client: LiteLLMClient) -> None:
        self.client = client
        self.result = ApplyResult()
        self.failed_users: set[str] = set()
        self.failed_teams: set[str] = set()

    async def apply(self, operations: Sequence[Operation]) -> ApplyResult:
        for _, phase_ops in groupby(operations, key=lambda op: op.PHASE):
            await self._run_groups(self._groups(list(phase_ops)))
        return self.result

    async def _run_groups(self, groups: list[list[Operation]]) -> None:
        """Run a phase's groups concurrently, in order, at most IN_FLIGHT at a time."""
        pending = iter(groups)

        async def worker() -> None:
            for group in pending:
                await self._run_group(group)

        await asyncio.gather(*(worker() for _ in range(min(IN_FLIGHT, len(groups)))))

    def _groups(self, ops: list[Operation]) -> list[list[Operation]]:
        """Batchable operations together; everything else on its own."""
        adds: dict[tuple[str, str], list[Operation]] = defaultdict(list)
        deletes: list[Operation] = []
        singles: list[list[Operation]] = []
        for op in ops:
            if isinstance(op, AddMember):
                adds[(op.team, op.role)].append(op)
            elif isinstance(op, DeleteKey):
                deletes.append(op)
            else:
                singles.append([op])
        groups = singles
        for batch in adds.values():
            groups.extend(batch[i : i + BATCH] for i in range(0, len(batch), BATCH))
        groups.extend(deletes[i : i + BATCH] for i in range(0, len(deletes), BATCH))
        return groups

    async def _run_group(self, ops: list[Operation]) -> None:
        runnable = [op for op in ops if not self._blocked_by_failure(op)]
        for op in ops:
            if op not in runnable:
                self._fail(op, "skipped: a prerequisite failed earlier in this run")
        if not runnable:
            return
        first = runnable[0]
        try:
            if isinstance(first, AddMember):
                await self._add_members([op for op in runnable if isinstance(op, AddMember)])
            elif isinstance(first, DeleteKey):
                tokens = [op.token for op in runnable if isinstance(op, DeleteKey)]
                await self.client.delete_keys(tokens)
            else:
                await self._single(first)
        except TargetWriteError as exc:
            for op in runnable:
                self._fail(op, str(exc))
            return
        for op in runnable:
            self._done(op)

    def _blocked_by_failure(self, op: Operation) -> bool:
        if isinstance(op, AddMember | ChangeMemberRole):
            return op.user in self.failed_users or op.team in self.failed_teams
        return False

    async def _add_members(self, ops: list[AddMember]) -> None:
        team = ops[0].team
        try:
            await self.client.add_members(team, [(op.user, op.role) for op in ops])
        except TargetWriteError as exc:
            if exc.kind != "premium" or ops[0].role != "admin":
                raise
            # Free licence: LiteLLM refuses team admins. Keep the access, report the role.
            self.result.warnings.append(
                f"team {team}: LiteLLM refused role admin (enterprise feature); "
                f"{len(ops)} member(s) added as user instead"
            )
            log.warning("admin_role_refused", team=team, members=len(ops))
            await self.client.add_members(team, [(op.user, "user") for op in ops])

    async def _single(self, op: Operation) -> None:
        c = self.client
        match op:
            case CreateUser():
                await c.create_user(op.user, op.email, op.username)
            case UpdateUserMetadata() | UnblockUser() | BlockUser():
                await c.update_user_metadata(op.user, op.metadata)
            case CreateTeam():
                await c.create_team(op.team, op.alias, op.settings, op.metadata)
            case UpdateTeam():
                fields = {name: new for name, _, new in op.changes if name != "metadata"}
                if "models" in fields and fields["models"] is not None:
                    fields["models"] = list(fields["models"])
                await c.update_team(op.team, fields, op.metadata)
            case UnblockTeam():
                await c.unblock_team(op.team, op.metadata)
            case ChangeMemberRole():
                await c.change_member_role(op.team, op.user, op.new)
            case UnblockKey():
                await c.unblock_key(op.token, op.unblock, op.metadata)
            case RemoveMember():
                await c.remove_member(op.team, op.user)
            case BlockKey():
                await c.block_key(op.token, op.metadata)
            case BlockTeam():
                await c.block_team(op.team, op.metadata)
            case DeleteTeam():
                await c.delete_team(op.team)
            case DeleteUser():
                await c.delete_user(op.user)
            case _:
                raise TargetWriteError(f"no handler for operation {op.KIND}")

    def _done(self, op: Operation) -> None:
        self.result.done.append(op)
        log.info("change", op=op.KIND, detail=describe(op), **op.ids())

    def _fail(self, op: Operation, error: str) -> None:
        if isinstance(op, CreateUser):
            self.failed_users.add(op.user)
        if isinstance(op, CreateTeam):
            self.failed_teams.add(op.team)
        self.result.failed.append((op, error))
        log.error("change_failed", op=op.KIND, detail=describe(op), error=error, **op.ids())
