"""The kept view of LiteLLM: the last full read, kept current by fresh rows.

A full reconcile reads all of LiteLLM (about 114 list requests at 10,000
users, some 20 s on a real proxy). A scoped run needs the rows of only a few
users and teams, so the daemon keeps the `Actual` of its last full read and,
for each scoped run, reads the rows of its subjects afresh (`Rows`: one
``/user/info`` or ``/team/info`` each) and lays them over the view. Fresh rows
always win; a fresh row that differs from the view means LiteLLM changed
outside syncd (an administrator, another tool), which the view cannot know
about beyond those rows, so the daemon schedules a full reconcile.

When a scope holds more rows than that is worth, LiteLLM is read *around* it
(`rows_around`): every team and key by pages, which are cheap, and only the
scope's user rows, a hundred to a request. On a real 1.110.2 proxy the user
pages are nine tenths of a whole read (about 0.8 s each at 10,000 users,
against 0.09 s for a page of teams or keys), so a burst of a few hundred
people costs seconds there instead of the 90 s of a whole read.

After every run, the subjects its writes touched are re-read the same way, so
the view is never a guess about what a write did (``/team/member_delete``
deleting the member's team keys, for one). All of this is pure: the reads
live in `syncd.litellm`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from syncd.model import Actual, Key, Team, User

T = TypeVar("T")


@dataclass(frozen=True)
class Rows:
    """Fresh rows of some users and teams. None: LiteLLM has no such object.

    `user_keys` are all keys of each user, `team_keys` all keys bound to each
    team: together they replace every key of the view that belongs to one of
    these users or teams.
    """

    users: Mapping[str, User | None] = field(default_factory=dict)
    teams: Mapping[str, Team | None] = field(default_factory=dict)
    user_keys: Mapping[str, tuple[Key, ...]] = field(default_factory=dict)
    team_keys: Mapping[str, tuple[Key, ...]] = field(default_factory=dict)
    # The teams each user's row says they are in (``/user/info``'s ``teams``):
    # how a membership made by hand since the last full read is found.
    user_teams: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users) + len(self.teams)


def overlay(view: Actual, rows: Rows) -> Actual:
    """The view with `rows` laid over it: fresh rows replace the kept ones."""
    keys = {
        token: key for token, key in view.keys.items()
        if key.user_id not in rows.user_keys and key.team_id not in rows.team_keys
    }
    for fresh in (*rows.user_keys.values(), *rows.team_keys.values()):
        keys.update((key.token, key) for key in fresh)
    return replace(view, users=_laid_over(view.users, rows.users),
                   teams=_laid_over(view.teams, rows.teams), keys=keys)


def _laid_over(kept: Mapping[str, T], fresh: Mapping[str, T | None]) -> dict[str, T]:
    out = dict(kept)
    for ident, row in fresh.items():
        if row is None:
            out.pop(ident, None)
        else:
            out[ident] = row
    return out


def rows_around(
    view: Actual, users: Mapping[str, User | None], teams: Iterable[Team], keys: Iterable[Key]
) -> Rows:
    """`Rows` from a read of every team and every key plus the rows of `users`
    (`LiteLLMClient.read_around`), such that `overlay` makes all of the view's
    teams and keys fresh, and those users.

    A kept team the read lacks is gone. Every user or team that holds a key in
    the view or in the read gets its fresh keys (none, when its keys were
    deleted). A user's teams are the fresh rosters naming them, which is what
    ``/user/info`` would answer, so no roster is left to re-read
    (`unsettled_teams` finds nothing)."""
    fresh_teams = {team.team_id: team for team in teams}
    fresh_keys = list(keys)
    every_key = (*view.keys.values(), *fresh_keys)
    holders = {k.user_id for k in every_key if k.user_id is not None} | set(users)
    bound = {k.team_id for k in every_key if k.team_id is not None} | set(view.teams)
    bound |= set(fresh_teams)
    user_keys: dict[str, list[Key]] = {uid: [] for uid in holders}
    team_keys: dict[str, list[Key]] = {tid: [] for tid in bound}
    for k in fresh_keys:
        if k.user_id is not None:
            user_keys[k.user_id].append(k)
        if k.team_id is not None:
            team_keys[k.team_id].append(k)
    rosters: dict[str, list[str]] = {uid: [] for uid in users}
    for tid, team in fresh_teams.items():
        for uid in rosters.keys() & team.members.keys():
            rosters[uid].append(tid)
    return Rows(
        users=dict(users),
        teams={**{tid: None for tid in view.teams}, **fresh_teams},
        user_keys={uid: tuple(found) for uid, found in user_keys.items()},
        team_keys={tid: tuple(found) for tid, found in team_keys.items()},
        user_teams={uid: tuple(sorted(tids)) for uid, tids in rosters.items()},
    )


def differences(view: Actual, rows: Rows) -> list[str]:
    """Users and teams whose fresh rows disagree with the view, one phrase each.

    Keys are not compared: people make and delete their own keys all day, and
    that says nothing about the teams and users syncd keeps in line. The keys
    a plan acts on are always those of fresh rows."""
    out: list[str] = []
    for uid, user in sorted(rows.users.items()):
        if view.users.get(uid) != user:
            out.append(f"user {uid}")
    for tid, team in sorted(rows.teams.items()):
        if view.teams.get(tid) != team:
            out.append(f"team {tid}")
    return out


def subjects_of(view: Actual, user_ids: Iterable[str], team_ids: Iterable[str]) -> tuple[
    set[str], set[str]
]:
    """The LiteLLM users and teams whose rows a plan about `user_ids` and
    `team_ids` depends on: those, and every team any of those users is in
    according to the view (a membership to remove is found there)."""
    users, teams = set(user_ids), set(team_ids)
    for tid, team in view.teams.items():
        if users & set(team.members):
            teams.add(tid)
    return users, teams


def unsettled_teams(view: Actual, rows: Rows) -> set[str]:
    """Teams not in `rows` whose kept roster disagrees with a fresh user row about
    that user: the user row lists the team and the kept roster lacks them (a
    membership made by hand), or the other way round (one removed by hand).
    Those rosters must be read fresh; the others agree with the user rows on
    who is in them, and a role changed by hand there waits for the next full
    reconcile."""
    kept: dict[str, set[str]] = {uid: set() for uid in rows.users}
    for tid, team in view.teams.items():  # one pass, however many users were read
        for uid in kept.keys() & team.members.keys():
            kept[uid].add(tid)
    out: set[str] = set()
    for uid, teams in kept.items():
        out |= set(rows.user_teams.get(uid, ())) ^ teams
    return out - set(rows.teams)
