"""Confirming destructive operations with direct reads made just before applying.

The bulk read that produced the plan may be seconds old and torn by
concurrent changes. For the few destructive operations of a run, syncd
re-reads each subject once (a user and their groups, or a group), concurrently,
and keeps an operation only when `syncd.evidence` says the fresh replies still
support it. Anything else, including a read that fails, drops the operation
for this run with its reason; the next run plans again from scratch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import structlog

from syncd.desired import Rules, still_selected
from syncd.errors import SourceReadError
from syncd.evidence import Evidence, GroupGone, SourceFacts, UserOutside, judge_group, judge_user
from syncd.operations import Op
from syncd.plan import Plan

log = structlog.get_logger("syncd.confirm")

T = TypeVar("T")


class FreshReads(Protocol):
    """The direct Keycloak reads a confirmation needs (`syncd.keycloak.KeycloakReader`)."""

    async def read_user(self, user_id: str) -> dict[str, Any] | None:
        """The user record; None when Keycloak has no such user."""
        ...

    async def read_user_groups(self, user_id: str) -> list[dict[str, Any]]:
        """The user's direct groups."""
        ...

    async def read_group(self, group_id: str) -> dict[str, Any] | None:
        """The group; None when it is gone."""
        ...


def evidence_of(op: Op) -> Evidence | None:
    """The claim a destructive operation rests on (every one carries one)."""
    value = getattr(op, "evidence", None)
    return value if isinstance(value, UserOutside | GroupGone) else None


async def _attempt(read: Awaitable[T]) -> T | SourceReadError:
    """A read's reply, or its failure as a value: one failed re-read must not
    cancel the others, it only leaves its own subject unconfirmed."""
    try:
        return await read
    except SourceReadError as exc:
        return exc


class Confirmer:
    """Re-reads the subjects of destructive operations and judges their claims."""

    def __init__(self, reader: FreshReads, facts: SourceFacts, rules: Rules) -> None:
        self.reader = reader
        self.facts = facts
        self.rules = rules
        self.reads = 0

    async def confirm(self, operations: Sequence[Op]) -> tuple[
        list[Op], list[tuple[Op, str]]
    ]:
        """Split `operations` into the confirmed and the dropped (with why)."""
        claims = {ev for op in operations if (ev := evidence_of(op)) is not None}
        verdicts = dict(
            zip(claims, await asyncio.gather(*(self._judge(c) for c in claims)), strict=True)
        )
        kept: list[Op] = []
        dropped: list[tuple[Op, str]] = []
        for op in operations:
            if not op.DESTRUCTIVE:
                kept.append(op)
                continue
            claim = evidence_of(op)
            why = "no evidence attached" if claim is None else verdicts[claim]
            if why is None:
                kept.append(op)
            else:
                dropped.append((op, why))
                log.warning("change_unconfirmed", op=op.KIND, reason=why, **op.ids())
        return kept, dropped

    async def _judge(self, claim: Evidence) -> str | None:
        if isinstance(claim, UserOutside):
            return await self._judge_user(claim)
        return await self._judge_group(claim)

    async def _judge_user(self, claim: UserOutside) -> str | None:
        self.reads += 1
        user = await _attempt(self.reader.read_user(claim.keycloak_id))
        if isinstance(user, SourceReadError):
            return f"could not re-read the user: {user}"
        groups: list[dict[str, Any]] | None = None
        if user is not None and user.get("enabled", True) is not False:
            self.reads += 1
            reply = await _attempt(self.reader.read_user_groups(claim.keycloak_id))
            if isinstance(reply, SourceReadError):
                return f"could not re-read the user's groups: {reply}"
            groups = reply
        return judge_user(claim, user, groups, self.facts)

    async def _judge_group(self, claim: GroupGone) -> str | None:
        self.reads += 1
        group = await _attempt(self.reader.read_group(claim.team_id))
        if isinstance(group, SourceReadError):
            return f"could not re-read the group: {group}"
        return judge_group(claim, group, lambda raw: still_selected(raw, self.rules))


def with_unconfirmed(plan: Plan, dropped: Sequence[tuple[Op, str]]) -> Plan:
    """The plan as applied: without the dropped operations, which it lists."""
    gone = {id(op) for op, _ in dropped}
    return replace(
        plan,
        operations=tuple(op for op in plan.operations if id(op) not in gone),
        unconfirmed=tuple(dropped),
    )
