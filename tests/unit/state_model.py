"""A model of how LiteLLM's state changes under each operation, for planner tests.

It follows the emulator (and so the real proxy): member_delete also deletes the
member's keys for that team; team/new adds default_user_id as admin; team
deletion deletes the team's keys; user deletion removes memberships and keys.
"""

from __future__ import annotations

from dataclasses import replace

from syncd.model import DEFAULT_USER_ID, MANAGED, Actual, Key, Team, TeamSettings, User
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


def apply_ops(actual: Actual, ops: tuple[Operation, ...]) -> Actual:
    teams = {k: v for k, v in actual.teams.items()}
    users = {k: v for k, v in actual.users.items()}
    keys: dict[str, Key] = {k: v for k, v in actual.keys.items()}
    for op in ops:
        match op:
            case CreateUser():
                users[op.user] = User(
                    op.user, op.email, "internal_user", {MANAGED: True, **op.metadata},
                    alias=op.username,
                )
            case UpdateUserMetadata() | UnblockUser() | BlockUser() | LinkUser():
                users[op.user] = replace(users[op.user], metadata=dict(op.metadata))
            case UpdateUserProfile():
                fields = {n: new for n, _, new in op.changes}
                user = users[op.user]
                users[op.user] = replace(
                    user, email=fields.get("user_email", user.email),
                    alias=fields.get("user_alias", user.alias),
                )
            case CreateTeam():
                teams[op.team] = Team(
                    op.team, op.alias, op.settings, {DEFAULT_USER_ID: "admin"}, dict(op.metadata)
                )
            case UpdateTeam():
                team = teams[op.team]
                values = {n: new for n, _, new in op.changes if n not in ("metadata", "team_alias")}
                settings = TeamSettings(**{**team.settings.__dict__, **values})
                alias = next((new for n, _, new in op.changes if n == "team_alias"), team.alias)
                teams[op.team] = replace(
                    team, alias=alias, settings=settings, metadata=dict(op.metadata)
                )
            case UnblockTeam():
                teams[op.team] = replace(teams[op.team], blocked=False, metadata=dict(op.metadata))
            case BlockTeam():
                teams[op.team] = replace(teams[op.team], blocked=True, metadata=dict(op.metadata))
            case AddMember():
                team = teams[op.team]
                teams[op.team] = replace(team, members={**team.members, op.user: op.role})
                users.setdefault(op.user, User(op.user, None, "internal_user", {}))
            case ChangeMemberRole():
                team = teams[op.team]
                teams[op.team] = replace(team, members={**team.members, op.user: op.new})
            case RemoveMember():
                team = teams[op.team]
                members = {u: r for u, r in team.members.items() if u != op.user}
                teams[op.team] = replace(team, members=members)
                keys = {t: k for t, k in keys.items()
                        if not (k.user_id == op.user and k.team_id == op.team)}
            case DeleteKey():
                keys.pop(op.token, None)
            case BlockKey():
                keys[op.token] = replace(keys[op.token], blocked=True, metadata=dict(op.metadata))
            case UnblockKey():
                k = keys[op.token]
                keys[op.token] = replace(
                    k, blocked=False if op.unblock else k.blocked, metadata=dict(op.metadata)
                )
            case DeleteTeam():
                teams.pop(op.team)
                keys = {t: k for t, k in keys.items() if k.team_id != op.team}
            case DeleteUser():
                users.pop(op.user)
                keys = {t: k for t, k in keys.items() if k.user_id != op.user}
                for tid, team in list(teams.items()):
                    if op.user in team.members:
                        members = {u: r for u, r in team.members.items() if u != op.user}
                        teams[tid] = replace(team, members=members)
            case _:
                raise AssertionError(f"unmodelled operation {op}")
    return Actual(teams=teams, users=users, keys=keys)
