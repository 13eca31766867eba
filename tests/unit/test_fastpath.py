"""Folding fresh reads into the last snapshot gives what a full read would give.

The property behind the fast path: when only some users' memberships changed,
the snapshot patched with fresh reads of exactly those users builds the same
`Desired` as a full read of the new state (no I/O here; the same against a
real Keycloak is in tests/integration/test_events.py).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.desired import Group, Member, Rules, SourceSnapshot, build, groups_to_read
from syncd.fastpath import (
    FreshUser,
    changed_teams,
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
