"""Rendering plans and run summaries for people (text) and machines (JSON).

A plan is read by someone deciding whether to let it run, so it is grouped by
team and names people, not UUIDs alone. Keys appear by alias or their last four
characters, never the key or its hash; metadata values other than syncd's own
keys are not shown.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from syncd.operations import BlockKey, DeleteKey, Names, Op
from syncd.plan import Plan

__all__ = ["Names", "op_dict", "plan_json", "render_plan", "summary_line"]

_HIDDEN_FIELDS = frozenset({"token", "metadata"})


def op_dict(op: Op) -> dict[str, Any]:
    """An operation as JSON-safe data, minus key hashes and full metadata."""
    return {k: v for k, v in op.to_dict().items() if k not in _HIDDEN_FIELDS}


def _sign(op: Op) -> str:
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
    if not (plan or plan.unconfirmed or plan.skipped):
        lines.append("No changes: LiteLLM matches Keycloak."
                     + (" Warnings below." if plan.warnings else ""))
    elif not plan:
        lines.append("No changes to apply; see below for what was left out and why.")
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
            lines.append(f"  - {op.describe(names)}: {why}")
    for s in plan.skipped:
        lines.append(f"Skipped team {names.team(s.team_id)} [{s.team_id}]: {s.reason}")
    for w in plan.warnings:
        lines.append(f"Warning: {w}")
    return "\n".join(lines)


def _team_of(op: Op) -> str | None:
    """The team an operation is listed under; None: under Users.

    Key operations are about their owner, except a key deleted because its
    owner left that one team: that is part of the team's change."""
    if isinstance(op, DeleteKey):
        return op.team_id if op.cause == "left_group" else None
    if isinstance(op, BlockKey):
        return None
    return op.team_id


def _grouped(ops: tuple[Op, ...], names: Names) -> list[str]:
    by_team: dict[str, list[Op]] = defaultdict(list)
    users: list[Op] = []
    for op in ops:
        team = _team_of(op)
        if team is not None:
            by_team[team].append(op)
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


def _lines(ops: list[Op], names: Names) -> list[str]:
    """In apply order, and alphabetical within a step so people find names."""
    described = sorted((op.PHASE, op.describe(names), _sign(op)) for op in ops)
    return [f"  {sign} {text}" for _, text, sign in described]


def plan_json(plan: Plan, names: Names) -> dict[str, Any]:
    def entry(op: Op) -> dict[str, Any]:
        data = op_dict(op)
        data["description"] = op.describe(names)
        return data

    return {
        "operations": [entry(op) for op in plan.operations],
        "held_back": [entry(op) for op in plan.held_back],
        "brake_reason": plan.brake_reason,
        "unconfirmed": [{**entry(op), "why": why} for op, why in plan.unconfirmed],
        "skipped": [{"team_id": s.team_id, "reason": s.reason} for s in plan.skipped],
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
    if stats.get("batches_split") or stats.get("retried"):
        extra += ", {retried} resent after uncertain answers ({batches_split} batch(es) split)"
    if stats.get("interrupted") or stats.get("not_started"):
        extra += ", stopped early: {interrupted} cut off in flight, {not_started} not started"
    return (
        "syncd {result}: {groups} groups ({teams} selected), {users} users, "
        "{memberships} memberships seen; {applied} change(s) applied, {failed} failed, "
        "{held_back} held back, {unconfirmed} unconfirmed" + extra + "; requests "
        "keycloak={kc_requests} litellm={ll_requests} ({ll_writes} writes); {duration:.1f}s"
    ).format(**stats)
