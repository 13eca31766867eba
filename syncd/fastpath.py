"""The fast path's pure part: fold fresh reads of a few subjects into the last
snapshot, and say which subjects a plan may touch.

The daemon keeps the `SourceSnapshot` of its last full reconcile. An event
batch names users and groups (`syncd.events.Hints`); those are re-read from
Keycloak, and `patch` replaces exactly their part of the snapshot: a user's
direct memberships everywhere, the group tree when a group changed, the
members of groups that became teams. `build` then gives the same `Desired` a
full read at this moment would give for those subjects, and `scope_of` limits
the plan to them, so the fast path never writes what only a full reconcile
has evidence for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from syncd.desired import Group, Member, Rules, SourceSnapshot, groups_to_read, walk
from syncd.model import Desired, Scope


@dataclass(frozen=True)
class FreshUser:
    """A user as re-read just now: None for `member` when Keycloak has no such
    user (deleted); `groups` are the ids of their direct groups."""

    user_id: str
    member: Member | None
    groups: frozenset[str]


def member_of(raw: Mapping[str, object]) -> Member:
    """A `Member` from a ``GET /users/{id}`` record, as the members listing gives it."""
    email = raw.get("email")
    return Member(
        id=str(raw["id"]),
        username=str(raw["username"]),
        email=email if isinstance(email, str) else None,
        enabled=raw.get("enabled", True) is not False,
        email_verified=raw.get("emailVerified") is True,
    )


def unknown_groups(snapshot: SourceSnapshot, fresh: Iterable[FreshUser]) -> set[str]:
    """Groups a fresh user is in that the snapshot's tree does not know: the
    tree is older than that membership, and must be re-read first."""
    known = {g.id for g in walk(snapshot.groups)}
    return {g for user in fresh for g in user.groups if g not in known}


def patch(
    snapshot: SourceSnapshot,
    rules: Rules,
    *,
    fresh: Iterable[FreshUser] = (),
    tree: list[Group] | None = None,
    members: Mapping[str, list[Member]] | None = None,
) -> SourceSnapshot:
    """A new snapshot: `tree` (when re-read) replaces the groups, `members`
    (freshly read lists) replace those groups' members, and each fresh user
    is taken out of every group and put back into its current ones. Groups
    no longer needed are dropped, so nothing stale is kept for later."""
    groups = tree if tree is not None else snapshot.groups
    needed = groups_to_read(groups, rules)
    out: dict[str, list[Member]] = {
        gid: list(snapshot.members.get(gid, [])) for gid in needed
    }
    for gid, listed in (members or {}).items():
        if gid in needed:
            out[gid] = list(listed)
    for user in fresh:
        for gid in out:
            out[gid] = [m for m in out[gid] if m.id != user.user_id]
        if user.member is None:
            continue
        for gid in user.groups & needed:
            out[gid].append(user.member)
    return SourceSnapshot(groups=groups, members=out)


def graft(tree: list[Group], fresh: Mapping[str, Group | None]) -> list[Group] | None:
    """The tree with each freshly read subtree in its place, or None when they
    cannot be placed (a parent not in the tree, a nested group read without
    its parent's id, subtrees read at different moments that disagree): only
    a whole read can then say where they are.

    `fresh` maps a group id to its subtree as re-read (`read_subtree`), or to
    None when Keycloak no longer has it. A group gone takes its subtree with
    it (Keycloak deletes subgroups with their parent, without events for
    them); a group found replaces its old subtree wherever that was, so a
    rename or a move is handled like any other change. Every group of a fresh
    subtree is taken out of its old place first, so a group moved into a
    changed one is not kept twice. `tree` itself is not changed: it belongs
    to the kept snapshot.
    """
    subtrees = [t for t in fresh.values() if t is not None]
    inside = {g.id for t in subtrees for g in t.descendants()}
    pending = [t for t in subtrees if t.id not in inside]
    read = {g.id for t in subtrees for g in walk([t])}
    gone = set(fresh) | read
    out = _without([_copy(g) for g in tree], gone)
    while pending:
        left = []
        for subtree in pending:
            if subtree.parent_id is None:
                if subtree.path.count("/") > 1:  # nested, but read without parentId
                    return None
                out.append(_copy(subtree))
                continue
            parent = next((g for g in walk(out) if g.id == subtree.parent_id), None)
            if parent is None:
                left.append(subtree)
                continue
            parent.children.append(_copy(subtree))
            parent.sub_group_count = len(parent.children)
        if len(left) == len(pending):
            return None
        pending = left
    ids = [g.id for g in walk(out)]
    if len(ids) != len(set(ids)) or not read <= set(ids):  # torn: read at different moments
        return None
    return out


def _copy(group: Group) -> Group:
    return replace(group, children=[_copy(c) for c in group.children])


def _without(groups: list[Group], ids: set[str]) -> list[Group]:
    kept = [g for g in groups if g.id not in ids]
    for group in kept:
        group.children = _without(group.children, ids)
    return kept


def missing_members(snapshot: SourceSnapshot, rules: Rules, tree: list[Group]) -> set[str]:
    """Groups `tree` needs the members of that the snapshot never read: new
    teams, and groups that now feed one."""
    return groups_to_read(tree, rules) - set(snapshot.members)


def scope_of(
    users: Iterable[str],
    groups: Iterable[str],
    before: SourceSnapshot,
    old: Desired,
    new: Desired,
) -> Scope:
    """The subjects a fast-path plan may touch.

    Users named by events, and for each changed group: the teams it was or is
    part of (itself, its teams, the teams it fed under flatten), every group
    under it in the old tree (deleting a group deletes its subgroups without
    events for them), and all members of those teams before and after, since
    their access follows from the group and no event names them.
    """
    changed = set(groups)
    for group in walk(before.groups):
        if group.id in changed:
            changed.update(d.id for d in group.descendants())
    teams = {t for t in changed if t in old.teams or t in new.teams}
    for state in (old, new):
        teams.update(t for t, sources in state.sources.items() if sources & changed)
    people = set(users)
    for state in (old, new):
        for team_id in teams:
            team = state.teams.get(team_id)
            if team is not None:
                people.update(team.members)
    for gid in changed:
        people.update(m.id for m in before.members.get(gid, []))
    return Scope(users=frozenset(people), teams=frozenset(teams))


def changed_teams(old: Desired, new: Desired, users: Iterable[str]) -> set[str]:
    """Teams where what any of `users` should be (member or not, and the role)
    differs between `old` and `new`: the teams a change of those users plans
    writes for."""
    wanted = set(users)

    def roles(state: Desired, team_id: str) -> dict[str, str]:
        team = state.teams.get(team_id)
        if team is None:
            return {}
        return {u: str(team.members[u]) for u in wanted if u in team.members}

    return {t for t in set(old.teams) | set(new.teams) if roles(old, t) != roles(new, t)}
