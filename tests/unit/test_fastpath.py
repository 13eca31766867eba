"""Folding fresh reads into the last snapshot gives what a full read would give.

The property behind the fast path: when only some users' memberships changed,
the snapshot patched with fresh reads of exactly those users builds the same
`Desired` as a full read of the new state (no I/O here; the same against a
real Keycloak is in tests/integration/test_events.py).
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.desired import Group, Member, Rules, SourceSnapshot, build, groups_to_read, walk
from syncd.fastpath import (
    FreshUser,
    changed_teams,
    graft,
    member_of,
    missing_members,
    patch,
    scope_of,
    unknown_groups,
)
from syncd.model import Desired

RULES = Rules(path_prefixes=("/llm",), admin_subgroup="admins", flatten=True)


def tree() -> list[Group]:
    llm = Group("llm", "llm", "/llm", None, {}, 2)
    a = Group("a", "a", "/llm/a", "llm", {}, 1)
    a_admins = Group("a-adm", "admins", "/llm/a/admins", "a", {}, 0)
    a.children = [a_admins]
    b = Group("b", "b", "/llm/b", "llm", {}, 0)
    llm.children = [a, b]
    other = Group("x", "x", "/other", None, {}, 0)
    return [llm, other]


GROUPS = ["llm", "a", "a-adm", "b", "x"]
USERS = [Member(f"u{i}", f"user{i}", f"user{i}@example.com", True) for i in range(6)]


def truth(memberships: dict[str, set[str]]) -> SourceSnapshot:
    """A full read of `memberships` (user id -> direct groups)."""
    groups = tree()
    needed = groups_to_read(groups, RULES)
    members = {g: [u for u in USERS if g in memberships.get(u.id, set())] for g in needed}
    return SourceSnapshot(groups, members)


memberships = st.dictionaries(
    st.sampled_from([u.id for u in USERS]), st.sets(st.sampled_from(GROUPS)), max_size=6
)


@settings(max_examples=300, deadline=None)
@given(before=memberships, after=memberships)
def test_patching_the_changed_users_equals_a_full_read(
    before: dict[str, set[str]], after: dict[str, set[str]]
) -> None:
    changed = {u.id for u in USERS if before.get(u.id, set()) != after.get(u.id, set())}
    fresh = [FreshUser(u.id, u, frozenset(after.get(u.id, set())))
             for u in USERS if u.id in changed]
    patched = patch(truth(before), RULES, fresh=fresh)
    assert build(patched, RULES).desired == build(truth(after), RULES).desired


def test_a_deleted_user_leaves_every_group() -> None:
    before = truth({"u1": {"a", "b"}, "u2": {"a"}})
    patched = patch(before, RULES, fresh=[FreshUser("u1", None, frozenset())])
    desired = build(patched, RULES).desired
    assert "u1" not in desired.users and set(desired.teams["a"].members) == {"u2"}


def test_a_disabled_user_stays_listed_but_gets_no_team() -> None:
    off = Member("u1", "user1", None, False)
    patched = patch(truth({"u1": {"a"}}), RULES, fresh=[FreshUser("u1", off, frozenset({"a"}))])
    assert "u1" not in build(patched, RULES).desired.users


def test_a_group_unknown_to_the_tree_is_reported() -> None:
    fresh = [FreshUser("u1", USERS[1], frozenset({"a", "new-group"}))]
    assert unknown_groups(truth({}), fresh) == {"new-group"}


def test_a_new_tree_asks_for_the_members_of_new_teams_only() -> None:
    before = truth({"u1": {"a"}})
    groups = tree()
    c = Group("c", "c", "/llm/c", "llm", {}, 0)
    groups[0].children.append(c)
    assert missing_members(before, RULES, groups) == {"c"}
    patched = patch(before, RULES, tree=groups, members={"c": [USERS[3]]})
    assert set(build(patched, RULES).desired.teams["c"].members) == {"u3"}


def test_scope_of_a_deleted_group_covers_its_subgroups_teams_and_members() -> None:
    before = truth({"u1": {"a-adm"}, "u2": {"b"}, "u3": {"x"}})
    old = build(before, RULES).desired
    groups = tree()
    groups[0].children = [c for c in groups[0].children if c.id != "a"]  # /llm/a deleted
    after = patch(before, RULES, tree=groups)
    new = build(after, RULES).desired
    scope = scope_of([], ["a"], before, old, new)
    # /llm/a and the parent it fed (flatten); everyone in those teams before.
    assert scope.teams == {"a", "llm"}
    assert scope.users == {"u1", "u2"}
    assert "a" not in new.teams


def test_scope_of_membership_events_is_the_users_named() -> None:
    before = truth({"u1": {"a"}, "u2": {"a"}})
    desired = build(before, RULES).desired
    scope = scope_of(["u1"], [], before, desired, desired)
    assert scope.users == {"u1"} and scope.teams == frozenset()


def test_a_fresh_user_read_carries_email_verified_into_the_desired_state() -> None:
    """users.link_by_email: verified needs Keycloak's emailVerified on both paths:
    the members listing (keycloak.read_members) and a fresh user read."""
    raw = {"id": "u9", "username": "nine", "email": "n@x.io", "emailVerified": True}
    assert member_of(raw).email_verified
    assert not member_of({**raw, "emailVerified": False}).email_verified
    assert not member_of({"id": "u8", "username": "eight"}).email_verified
    group = Group("g", "team", "/llm/team", None, {}, 0)
    snapshot = SourceSnapshot([group], {"g": [member_of(raw)]})
    built = build(snapshot, Rules(path_prefixes=("/llm",)))
    assert built.desired.users["u9"].email_verified


@settings(max_examples=200, deadline=None)
@given(before=memberships, after=memberships)
def test_the_changed_teams_are_those_where_a_changed_user_changed(
    before: dict[str, set[str]], after: dict[str, set[str]]
) -> None:
    """Outside `changed_teams`, every team holds the changed users as it did (same
    roles); inside, at least one of them is added, removed or given another role."""
    old, new = build(truth(before), RULES).desired, build(truth(after), RULES).desired
    users = {u.id for u in USERS if before.get(u.id, set()) != after.get(u.id, set())}
    changed = changed_teams(old, new, users)

    def held(state: Desired, tid: str) -> dict[str, str]:
        team = state.teams.get(tid)
        return {u: str(r) for u, r in (team.members.items() if team else ()) if u in users}

    for tid in set(old.teams) | set(new.teams):
        assert (tid in changed) == (held(old, tid) != held(new, tid)), tid
    assert changed_teams(old, new, set()) == set()


# -- grafting re-read subtrees (a group's admin event) -------------------------


def shape(groups: list[Group]) -> set[tuple[str, str | None, str]]:
    """A tree as (id, parent, path) facts, whatever the order of children."""
    out: set[tuple[str, str | None, str]] = set()

    def visit(group: Group, parent: str | None) -> None:
        out.add((group.id, parent, group.path))
        for child in group.children:
            visit(child, group.id)

    for top in groups:
        visit(top, None)
    return out


def subtree(groups: list[Group], gid: str) -> Group:
    return next(g for g in walk(groups) if g.id == gid)


def test_a_deleted_group_takes_its_subgroups_with_it_and_the_kept_tree_is_untouched() -> None:
    kept = tree()
    grafted = graft(kept, {"a": None})
    assert grafted is not None
    assert {g for g, _, _ in shape(grafted)} == {"llm", "b", "x"}
    assert shape(kept) == shape(tree())


def test_a_renamed_group_brings_its_subgroups_new_paths() -> None:
    after = tree()
    a = subtree(after, "a")
    a.name, a.path = "alpha", "/llm/alpha"
    a.children[0].path = "/llm/alpha/admins"
    grafted = graft(tree(), {"a": a})
    assert grafted is not None and shape(grafted) == shape(after)


def test_a_group_moved_under_another_leaves_its_old_place() -> None:
    after = tree()
    b = subtree(after, "b")
    subtree(after, "llm").children.remove(b)
    b.parent_id, b.path = "x", "/other/b"
    subtree(after, "x").children.append(b)
    for hinted in ({"b": b}, {"x": subtree(after, "x")}, {"b": b, "x": subtree(after, "x")}):
        grafted = graft(tree(), hinted)
        assert grafted is not None and shape(grafted) == shape(after), hinted


def test_a_new_group_under_a_new_parent_is_placed_whatever_the_order() -> None:
    parent = Group("n", "n", "/llm/n", "llm", {}, 1)
    child = Group("c", "c", "/llm/n/c", "n", {}, 0)
    parent.children = [child]
    for hinted in ({"c": child, "n": parent}, {"n": parent, "c": child}):
        grafted = graft(tree(), hinted)
        assert grafted is not None
        assert ("c", "n", "/llm/n/c") in shape(grafted) and len(shape(grafted)) == 7


def test_a_group_that_cannot_be_placed_asks_for_the_whole_tree() -> None:
    orphan = Group("o", "o", "/nowhere/o", "nowhere", {}, 0)
    assert graft(tree(), {"o": orphan}) is None
    no_parent_id = Group("o", "o", "/llm/o", None, {}, 0)  # Keycloak before 23
    assert graft(tree(), {"o": no_parent_id}) is None
    # torn reads: each group read as the other's child
    a = Group("p", "p", "/llm/q/p", "q", {}, 1)
    b = Group("q", "q", "/llm/p/q", "p", {}, 1)
    a.children, b.children = [replace(b, children=[])], [replace(a, children=[])]
    assert graft(tree(), {"p": a, "q": b}) is None


PARENTS = ["llm", "a", "a-adm", "b", "x", "n1", "n2"]


@st.composite
def forests(draw: st.DrawFn) -> list[Group]:
    """A random tree over the ids above: each id absent or under an earlier id."""
    present: dict[str, str | None] = {}
    for i, gid in enumerate(PARENTS):
        if draw(st.booleans()):
            present[gid] = draw(st.sampled_from([None, *[p for p in PARENTS[:i] if p in present]]))
    names = {gid: draw(st.sampled_from([gid, gid + "2"])) for gid in present}
    nodes: dict[str, Group] = {}
    for gid, parent in present.items():
        path = (nodes[parent].path if parent else "") + "/" + names[gid]
        nodes[gid] = Group(gid, names[gid], path, parent, {}, 0)
        if parent:
            nodes[parent].children.append(nodes[gid])
            nodes[parent].sub_group_count += 1
    return [g for g in nodes.values() if g.parent_id is None]


@settings(max_examples=300, deadline=None)
@given(after=forests(), extra=st.sets(st.sampled_from(PARENTS)))
def test_grafting_the_changed_groups_equals_a_whole_read(
    after: list[Group], extra: set[str]
) -> None:
    """Every group whose own place or name changed (as its admin event would
    name it), plus any others, re-read: the grafted tree is the new tree."""
    before = tree()
    subtree(before, "x").path = "/x"  # tree()'s x is named x but at /other
    kept = shape(before)
    old = {g.id: (g.parent_id, g.name) for g in walk(before)}
    new = {g.id: (g.parent_id, g.name) for g in walk(after)}
    changed = {gid for gid in old.keys() | new.keys() if old.get(gid) != new.get(gid)} | extra
    fresh = {gid: next((g for g in walk(after) if g.id == gid), None) for gid in changed}
    grafted = graft(before, fresh)
    assert grafted is not None
    assert shape(grafted) == shape(after)
    assert shape(before) == kept
