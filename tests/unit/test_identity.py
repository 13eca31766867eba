"""Linking rules (syncd.identity) and how the planner uses them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import ConfigError
from syncd.identity import resolve
from syncd.model import (
    ID_FROM,
    KEYCLOAK_ID,
    MANAGED,
    SCIM_ACTIVE,
    Actual,
    Desired,
    DesiredTeam,
    DesiredUser,
    TeamSettings,
    User,
)
from syncd.operations import (
    AddMember,
    BlockUser,
    CreateUser,
    LinkUser,
    RemoveMember,
    UpdateUserProfile,
)
from syncd.plan import make_plan
from tests.unit.policies import policy_at
from tests.unit.state_model import apply_ops

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def want(*users: DesiredUser, team: str = "t1") -> Desired:
    members = {u.user_id: "user" for u in users}
    t = DesiredTeam(team, "T", "/llm/t", TeamSettings(), members)  # type: ignore[arg-type]
    return Desired({team: t}, {u.user_id: u for u in users}, groups_seen=1)


def have(*users: User) -> Actual:
    return Actual({}, {u.user_id: u for u in users}, {})


ALICE = DesiredUser("kc-alice", "alice", "alice@example.com")
BOB = DesiredUser("kc-bob", "bob", "bob@example.com")


def test_sso_user_with_email_as_id_is_linked_under_rule_email() -> None:
    sso = User("alice@example.com", "alice@example.com", "internal_user", {"auth_provider": "x"})
    ids = resolve(want(ALICE), have(sso), "email")
    assert ids.links == {"alice@example.com": "id"}
    assert ids.keycloak_ids == {"alice@example.com": "kc-alice"}
    assert set(ids.desired.teams["t1"].members) == {"alice@example.com"}
    assert ids.bookkeeping("alice@example.com") == {
        MANAGED: True, KEYCLOAK_ID: "kc-alice", ID_FROM: "email"}


def test_rule_username_and_rule_id() -> None:
    assert set(resolve(want(ALICE), have(), "username").desired.users) == {"alice"}
    assert set(resolve(want(ALICE), have(), "id").desired.users) == {"kc-alice"}


def test_email_link_is_opt_in_and_otherwise_a_reported_collision() -> None:
    sso = User("someone", "Alice@Example.com")
    off = resolve(want(ALICE), have(sso))
    assert not off.keycloak_ids and off.held == {"someone"}
    assert len(off.unresolved) == 1 and "alice" in off.warnings[0]
    assert "someone" in off.warnings[0] and "link_by_email" in off.warnings[0]
    on = resolve(want(ALICE), have(sso), link_by_email=True)
    assert on.links == {"someone": "email"} and on.keycloak_ids == {"someone": "kc-alice"}


def test_two_keycloak_users_with_one_email_are_both_skipped_and_named() -> None:
    twin = DesiredUser("kc-alice2", "alice2", "ALICE@example.com")
    ids = resolve(want(ALICE, twin, BOB), have(), link_by_email=True)
    assert set(ids.desired.users) == {"kc-bob"}
    assert len(ids.unresolved) == 2
    assert all("alice2" in w and "alice " in w + " " for w in ids.warnings)


def test_email_of_a_departed_syncd_user_is_not_taken_over() -> None:
    old = User("kc-old", "alice@example.com", "internal_user",
               {MANAGED: True, SCIM_ACTIVE: False, "syncd_blocked_at": "2026-01-01T00:00:00Z"})
    ids = resolve(want(ALICE), have(old), link_by_email=True)
    assert not ids.keycloak_ids and not ids.held  # departure logic keeps going for kc-old
    assert "kc-old" in ids.warnings[0]


def test_tracked_user_follows_email_change_and_rename() -> None:
    linked = User("alice@example.com", "alice@example.com", "internal_user",
                  {MANAGED: True, KEYCLOAK_ID: "kc-alice", ID_FROM: "email"}, alias="alice")
    renamed = DesiredUser("kc-alice", "alice.smith", "alice.smith@example.com")
    ids = resolve(want(renamed), have(linked), "email")
    assert ids.keycloak_ids == {"alice@example.com": "kc-alice"}  # no second user
    assert ids.profile["alice@example.com"] == (
        ("user_alias", "alice", "alice.smith"),
        ("user_email", "alice@example.com", "alice.smith@example.com"))


def test_email_change_onto_another_users_email_is_not_made() -> None:
    a = User("kc-alice", "alice@example.com", None, {MANAGED: True}, alias="alice")
    b = User("kc-bob", "bob@example.com", None, {MANAGED: True}, alias="bob")
    moved = DesiredUser("kc-alice", "alice", "bob@example.com")
    ids = resolve(want(moved, BOB), have(a, b))
    assert "kc-alice" not in ids.profile and len(ids.unresolved) == 2


def test_changed_rule_is_refused() -> None:
    made = User("kc-alice", "alice@example.com", None, {MANAGED: True})
    with pytest.raises(ConfigError, match=r"users.id_from is 'email'.*back to 'id'"):
        resolve(want(ALICE), have(made), "email")


def test_plan_links_then_nothing_and_collision_blocks_nobody() -> None:
    sso = User("alice@example.com", "alice@example.com", "internal_user", {"k": "v"})
    twin = DesiredUser("kc-twin", "twin", "bob@example.com")
    bobs = User("bob@example.com", "bob@example.com", "internal_user",
                {MANAGED: True, KEYCLOAK_ID: "kc-bob", ID_FROM: "email"}, alias="bob")
    policy = policy_at(NOW, id_from="email", brake_released=True)
    desired, actual = want(ALICE, BOB, twin), have(sso, bobs)
    plan = make_plan(desired, actual, policy)
    links = [op for op in plan.operations if isinstance(op, LinkUser)]
    assert [(op.user_id, op.how) for op in links] == [("alice@example.com", "id")]
    assert links[0].metadata["k"] == "v"
    assert not any(isinstance(op, BlockUser | RemoveMember) for op in plan.operations)
    assert plan.unresolved_identities == 2 and all("twin" in w for w in plan.warnings)
    again = make_plan(desired, apply_ops(actual, plan.operations), policy)
    assert not [op for op in again.operations if not isinstance(op, AddMember)]


# --- property: never two Keycloak users on one LiteLLM user ----------------------

NAMES = st.sampled_from(["a", "b", "c", "d"])
EMAILS = st.one_of(st.none(), st.sampled_from(["a@x", "A@x", "b@x", "c@x"]))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Desired, Actual, str, bool]:
    rule = draw(st.sampled_from(["id", "username", "email"]))
    kc = draw(st.lists(st.tuples(NAMES, EMAILS), max_size=4, unique_by=lambda t: t[0]))
    users = tuple(DesiredUser(f"kc-{n}", n, e) for n, e in kc)
    ids = st.sampled_from(["kc-a", "kc-b", "a", "b", "a@x", "b@x", "z"])
    rows = draw(st.lists(st.tuples(ids, EMAILS, st.booleans(),
                                   st.one_of(st.none(), st.sampled_from(["kc-a", "kc-b"]))),
                         max_size=4, unique_by=lambda t: t[0]))
    ll = []
    for uid, email, managed, kc_id in rows:
        meta: dict[str, object] = {}
        if managed:
            meta[MANAGED] = True
            if rule != "id":
                meta[ID_FROM] = rule
            if kc_id and kc_id != uid:
                meta[KEYCLOAK_ID] = kc_id
        ll.append(User(uid, email, "internal_user", meta))
    return want(*users), have(*ll), rule, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_linking_never_merges_two_keycloak_users(world: tuple[Desired, Actual, str, bool]) -> None:
    desired, actual, rule, by_email = world
    ids = resolve(desired, actual, rule, by_email)  # type: ignore[arg-type]
    assert len(set(ids.keycloak_ids.values())) == len(ids.keycloak_ids)
    assert set(ids.desired.users) == set(ids.keycloak_ids)
    # nobody is both resolved and held, and a held user is never claimed by two
    assert not ids.held & set(ids.keycloak_ids)
    # a LiteLLM user recorded for one Keycloak user never goes to another
    for uid, kc in ids.keycloak_ids.items():
        u = actual.users.get(uid)
        stored = u.metadata.get(KEYCLOAK_ID) if u else None
        if isinstance(stored, str):
            assert stored == kc
        elif u is not None and u.managed:
            assert uid == kc
    # the plan's creates never carry an email another user already holds
    plan = make_plan(desired, actual, policy_at(NOW, id_from=rule, link_by_email=by_email,  # type: ignore[arg-type]
                                             brake_released=True))
    held_emails = {(u.email or "").casefold() for u in actual.users.values() if u.email}
    for op in plan.operations:
        if isinstance(op, CreateUser) and op.email:
            assert op.email.casefold() not in held_emails
    for op in plan.operations:
        if isinstance(op, UpdateUserProfile):
            assert op.user_id in ids.keycloak_ids
