"""Rendering plans and run summaries for people (text) and machines (JSON).

A plan is read by someone deciding whether to let it run, so it is grouped by
team and names people, not UUIDs alone. Keys appear by alias or their last four
characters, never the key or its hash; metadata values other than syncd's own
keys are not shown.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.model import Actual, Desired
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
    Operation,
    RemoveMember,
    UnblockKey,
    UnblockTeam,
    UnblockUser,
    UpdateTeam,
    UpdateUserMetadata,
    UpdateUserProfile,
)
from syncd.plan import Plan

_HIDDEN_FIELDS = frozenset({"token", "metadata"})


@dataclass
class Names:
    """Lookups that turn ids into something a person recognises."""

    teams: dict[str, str] = field(default_factory=dict)  # team_id -> "alias (path)"
    users: dict[str, str] = field(default_factory=dict)  # user_id -> username or email

    @classmethod
    def from_states(cls, desired: Desired, actual: Actual) -> Names:
        names = cls()
        for tid, team in actual.teams.items():
            names.teams[tid] = team.alias or tid
        for tid, dteam in desired.teams.items():
            names.teams[tid] = f"{dteam.alias} ({dteam.path})" if dteam.alias != dteam.path \
                else dteam.path
        for uid, user in actual.users.items():
            if user.email:
                names.users[uid] = user.email
        for uid, duser in desired.users.items():
            names.users[uid] = duser.username
        return names

    def team(self, team_id: str | None) -> str:
        if team_id is None:
            return "(no team)"
        return self.teams.get(team_id, team_id)

    def user(self, user_id: str) -> str:
        return self.users.get(user_id, user_id)


def op_dict(op: Operation) -> dict[str, Any]:
    """An operation as JSON-safe data, minus key hashes and full metadata."""
    out = {k: v for k, v in op.to_dict().items() if k not in _HIDDEN_FIELDS}
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str | dict) else str(value)


def describe(op: Operation, names: Names | None = None) -> str:
    """One line for one operation, as it appears in plans and logs."""
    n = names or Names()
    match op:
        case CreateUser():
            return f"create user {op.username} <{op.email or 'no email'}>"
        case UpdateUserMetadata():
            return f"mark user {n.user(op.user)} as managed by syncd"
        case LinkUser():
            why = "ids match under users.id_from" if op.how == "id" else \
                "same email, users.link_by_email"
            return (f"link existing LiteLLM user {op.user} to Keycloak user {op.username} "
                    f"({why}; keys, spend and other teams kept)")
        case UpdateUserProfile():
            parts = [f"{name}: {_fmt(old)} -> {_fmt(new)}" for name, old, new in op.changes]
            return f"update user {n.user(op.user)}: " + "; ".join(parts)
        case UnblockUser():
            return f"restore access of returning user {n.user(op.user)} (scim_active: true)"
        case CreateTeam():
            settings = ", ".join(f"{k}={_fmt(v)}" for k, v in op.settings.managed_items().items())
            return f"create team {op.alias}" + (f" with {settings}" if settings else "")
        case UpdateTeam():
            parts = [f"{name}: {_fmt(old)} -> {_fmt(new)}" for name, old, new in op.changes]
            return "update team: " + "; ".join(parts)
        case UnblockTeam():
            return "unblock team (its group is selected again)"
        case AddMember():
            return f"add member {n.user(op.user)} as {op.role}"
        case ChangeMemberRole():
            return f"change role of {n.user(op.user)}: {op.old} -> {op.new}"
        case UnblockKey():
            return f"unblock key {op.label} of {n.user(op.user)} (blocked by syncd)"
        case RemoveMember():
            return f"remove member {n.user(op.user)} ({op.reason})"
        case DeleteKey():
            where = f"team {n.team(op.team)}" if op.team else "personal key"
            return f"delete key {op.label} of {n.user(op.user)}, {where} ({op.reason})"
        case BlockKey():
            where = f"team {n.team(op.team)}" if op.team else "personal key"
            return f"block key {op.label} of {n.user(op.user)}, {where} ({op.reason})"
        case BlockUser():
            return f"block user {n.user(op.user)}: scim_active false ({op.reason})"
        case BlockTeam():
            return f"block team ({op.reason})"
        case DeleteTeam():
            return f"delete team ({op.reason})"
        case DeleteUser():
            return f"delete user {n.user(op.user)} and all their keys ({op.reason})"
    return op.KIND


def _sign(op: Operation) -> str:
    if op.DESTRUCTIVE:
        return "-"
    if op.KIND.startswith("create") or op.KIND.startswith("add"):
        return "+"
    return "~"


def render_plan(plan: Plan, names: Names) -> str:
    """The plan as text, grouped by team, then users, then what the brake held back."""
    lines: list[str] = []
    total = len(plan.operations)
    destructive = sum(op.DESTRUCTIVE for op in plan.operations)
    if not plan:
        lines.append("No changes: LiteLLM matches Keycloak.")
    else:
        lines.append(
            f"Plan: {total} change(s), {destructive} destructive"
            + (f"; {len(plan.held_back)} held back by the safety brake" if plan.braked else "")
        )
    lines.extend(_grouped(plan.operations, names))
    if plan.held_back:
        lines.append("")
        lines.append(f"Held back by the safety brake: {plan.brake_reason}")
        lines.append("  (run with --force to apply them once)")
        lines.extend("  " + line for line in _grouped(plan.held_back, names))
    if plan.unconfirmed:
        lines.append("")
        lines.append("Not applied this run: a fresh read of Keycloak did not confirm them")
        for op, why in plan.unconfirmed:
            lines.append(f"  - {describe(op, names)}: {why}")
    for s in plan.skipped:
        lines.append(f"Skipped team {names.team(s.team)} [{s.team}]: {s.reason}")
    for w in plan.warnings:
        lines.append(f"Warning: {w}")
    return "\n".join(lines)


def _grouped(ops: tuple[Operation, ...], names: Names) -> list[str]:
    by_team: dict[str, list[Operation]] = defaultdict(list)
    users: list[Operation] = []
    for op in ops:
        team = op.team_id
        if team is not None and not isinstance(op, BlockKey | DeleteKey):
            by_team[team].append(op)
        elif isinstance(op, DeleteKey) and op.team and not op.reason.startswith("departed"):
            by_team[op.team].append(op)
        else:
            users.append(op)
    lines: list[str] = []
    for team in sorted(by_team, key=lambda t: names.team(t)):
        lines.append(f"Team {names.team(team)} [{team}]")
        lines.extend(_lines(by_team[team], names))
    if users:
        lines.append("Users")
        lines.extend(_lines(users, names))
    return lines


def _lines(ops: list[Operation], names: Names) -> list[str]:
    """In apply order, and alphabetical within a step so people find names."""
    described = sorted((op.PHASE, describe(op, names), _sign(op)) for op in ops)
    return [f"  {sign} {text}" for _, text, sign in described]


def plan_json(plan: Plan, names: Names) -> dict[str, Any]:
    def entry(op: Operation) -> dict[str, Any]:
        data = op_dict(op)
        data["description"] = describe(op, names)
        return data

    return {
        "operations": [entry(op) for op in plan.operations],
        "held_back": [entry(op) for op in plan.held_back],
        "brake_reason": plan.brake_reason,
        "unconfirmed": [{**entry(op), "why": why} for op, why in plan.unconfirmed],
        "skipped": [{"team": s.team, "reason": s.reason} for s in plan.skipped],
        "warnings": list(plan.warnings),
        "destructive": plan.destructive_count,
        "managed_memberships": plan.managed_memberships,
    }


def summary_line(stats: Mapping[str, Any]) -> str:
    """The one line every run ends with (also logged as the `sync_finished` event).

    Operations a licence refusal kept out, or a stop cut off or never started,
    are named only when there are any."""
    extra = ""
    if stats.get("refused"):
        extra += ", {refused} refused by the proxy (licence)"
    if stats.get("interrupted") or stats.get("not_started"):
        extra += ", stopped early: {interrupted} cut off in flight, {not_started} not started"
    return (
        "syncd {result}: {groups} groups ({teams} selected), {users} users, "
        "{memberships} memberships seen; {applied} change(s) applied, {failed} failed, "
        "{held_back} held back, {unconfirmed} unconfirmed" + extra + "; requests "
        "keycloak={kc_requests} litellm={ll_requests} ({ll_writes} writes); {duration:.1f}s"
    ).format(**stats)
