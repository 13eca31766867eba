"""A model of how LiteLLM's state changes under each operation, for planner tests.

It follows the emulator (and so the real proxy): member_delete also deletes the
member's keys for that team; team/new adds default_user_id as admin; team
deletion deletes the team's keys; user deletion removes memberships and keys;
/user/new refuses an email another user holds, case-insensitively (here an
`EmailTaken` error: a plan must never ask for it); /user/update takes any email,
and ``""`` is what empties one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import assert_never

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


class EmailTaken(AssertionError):
    """The plan created a user with an email LiteLLM's /user/new would refuse."""


def _fold(email: str | None) -> str:
    return (email or "").strip().casefold()


def apply_ops(actual: Actual, ops: tuple[Op, ...]) -> Actual:
    teams = {k: v for k, v in actual.teams.items()}
    users = {k: v for k, v in actual.users.items()}
    keys: dict[str, Key] = {k: v for k, v in actual.keys.items()}
    for op in ops:
        match op:
            case CreateUser():
                if op.email and any(_fold(u.email) == _fold(op.email) for u in users.values()):
                    raise EmailTaken(f"/user/new {op.user_id} with taken email {op.email}")
                users[op.user_id] = User(
                    op.user_id, op.email, "internal_user", {MANAGED: True, **thaw(op.metadata)},
                    alias=op.username,
                )
            case UpdateUserMetadata() | UnblockUser() | BlockUser() | LinkUser():
                users[op.user_id] = replace(users[op.user_id], metadata=thaw(op.metadata))
            case UpdateUserProfile():
                fields = {n: new for n, _, new in op.changes}
                user = users[op.user_id]
                users[op.user_id] = replace(
                    user, email=fields.get("user_email", user.email),
                    alias=fields.get("user_alias", user.alias),
                )
            case CreateTeam():
                teams[op.team_id] = Team(
                    op.team_id, op.alias, op.settings, {DEFAULT_USER_ID: "admin"}, thaw(op.metadata)
                )
            case UpdateTeam():
                team = teams[op.team_id]
                values = {n: new for n, _, new in op.changes if n not in ("metadata", "team_alias")}
                settings = TeamSettings(**{**team.settings.__dict__, **values})
                alias = next((new for n, _, new in op.changes if n == "team_alias"), team.alias)
                teams[op.team_id] = replace(
                    team, alias=alias, settings=settings, metadata=thaw(op.metadata)
                )
            case UnblockTeam():
                teams[op.team_id] = replace(
                    teams[op.team_id], blocked=False, metadata=thaw(op.metadata)
                )
            case BlockTeam():
                teams[op.team_id] = replace(
                    teams[op.team_id], blocked=True, metadata=thaw(op.metadata)
                )
            case AddMember():
                team = teams[op.team_id]
                teams[op.team_id] = replace(team, members={**team.members, op.user_id: op.role})
                users.setdefault(op.user_id, User(op.user_id, None, "internal_user", {}))
            case ChangeMemberRole():
                team = teams[op.team_id]
                teams[op.team_id] = replace(team, members={**team.members, op.user_id: op.new})
            case RemoveMember():
                team = teams[op.team_id]
                members = {u: r for u, r in team.members.items() if u != op.user_id}
                teams[op.team_id] = replace(team, members=members)
                keys = {t: k for t, k in keys.items()
                        if not (k.user_id == op.user_id and k.team_id == op.team_id)}
            case DeleteKey():
                keys.pop(op.token, None)
            case BlockKey():
                keys[op.token] = replace(keys[op.token], blocked=True, metadata=thaw(op.metadata))
            case UnblockKey():
                k = keys[op.token]
                keys[op.token] = replace(
                    k, blocked=False if op.unblock else k.blocked, metadata=thaw(op.metadata)
                )
            case DeleteTeam():
                teams.pop(op.team_id)
                keys = {t: k for t, k in keys.items() if k.team_id != op.team_id}
            case DeleteUser():
                users.pop(op.user_id)
                keys = {t: k for t, k in keys.items() if k.user_id != op.user_id}
                for tid, team in list(teams.items()):
                    if op.user_id in team.members:
                        members = {u: r for u, r in team.members.items() if u != op.user_id}
                        teams[tid] = replace(team, members=members)
            case ReleaseEmail():
                users[op.user_id] = replace(
                    users[op.user_id], email="", metadata=thaw(op.metadata)
                )
                users[op.to_user_id] = replace(users[op.to_user_id], email=op.to_email)
            case _:
                assert_never(op)
    return Actual(teams=teams, users=users, keys=keys)
