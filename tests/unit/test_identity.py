"""Linking rules (syncd.identity) and how the planner uses them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import ConfigError
from syncd.identity import Release, resolve
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


def test_email_link_needs_a_verified_address_by_default() -> None:
    sso = User("someone", "Alice@Example.com")
    off = resolve(want(ALICE), have(sso))  # default: verified, and ALICE's is not
    assert off.keycloak_ids == {"kc-alice": "kc-alice"} and not off.links
    assert off.desired.users["kc-alice"].email is None  # access, without the address
    assert off.held == {"someone"} and off.left_out == 0 and off.withheld == 1
    assert "alice" in off.warnings[0] and "someone" in off.warnings[0]
    assert "verified" in off.warnings[0]
    verified = replace(ALICE, email_verified=True)
    on = resolve(want(verified), have(sso))
    assert on.links == {"someone": "email"} and on.keycloak_ids == {"someone": "kc-alice"}
    assert not on.unresolved
    assert resolve(want(ALICE), have(sso), link_by_email="true").links == {"someone": "email"}
    never = resolve(want(verified), have(sso), link_by_email="false")
    assert not never.links and "link_by_email is false" in never.warnings[0]


def test_two_keycloak_users_with_one_email_both_get_access_without_it() -> None:
    twin = DesiredUser("kc-alice2", "alice2", "ALICE@example.com", True)
    ids = resolve(want(replace(ALICE, email_verified=True), twin, BOB), have())
    assert set(ids.desired.users) == {"kc-alice", "kc-alice2", "kc-bob"}
    assert ids.desired.users["kc-alice"].email is None
    assert ids.desired.users["kc-alice2"].email is None
    assert ids.desired.users["kc-bob"].email == "bob@example.com"
    assert set(ids.desired.teams["t1"].members) == {"kc-alice", "kc-alice2", "kc-bob"}
    assert ids.left_out == 0 and ids.withheld == 2
    assert all("alice2" in w and "alice " in w + " " for w in ids.warnings)


def test_a_shared_email_stays_with_the_user_that_has_it() -> None:
    """The stable rule: nobody is newly given a shared address; one who has it keeps it."""
    alice = User("kc-alice", "alice@example.com", None, {MANAGED: True}, alias="alice")
    twin = DesiredUser("kc-alice2", "alice2", "alice@example.com", True)
    ids = resolve(want(ALICE, twin), have(alice))
    assert "kc-alice" not in ids.profile and ids.desired.users["kc-alice"].email == \
        "alice@example.com"
    assert ids.desired.users["kc-alice2"].email is None
    assert [u.keycloak_id for u in ids.unresolved] == ["kc-alice2"]


def test_email_of_a_departed_syncd_user_is_released_not_its_keys() -> None:
    old = User("kc-old", "Alice@example.com", "internal_user",
               {MANAGED: True, SCIM_ACTIVE: False, "syncd_blocked_at": "2026-01-01T00:00:00Z"})
    ids = resolve(want(ALICE), have(old))
    assert ids.keycloak_ids == {"kc-alice": "kc-alice"} and not ids.held and not ids.links
    assert ids.desired.users["kc-alice"].email is None  # created without it, at once
    assert ids.releases == (
        Release("kc-old", "kc-old", "Alice@example.com", "kc-alice", "alice@example.com"),)
    assert not ids.unresolved


def test_an_address_is_never_taken_from_an_active_or_foreign_user() -> None:
    a = User("kc-alice", "alice@example.com", None, {MANAGED: True}, alias="alice")
    b = User("kc-bob", "bob@example.com", None, {MANAGED: True}, alias="bob")
    moved = DesiredUser("kc-alice", "alice", "bob@example.com")
    bob2 = DesiredUser("kc-bob", "bob", "bob2@example.com")
    ids = resolve(want(moved, bob2), have(a, b))  # bob is active: his address stays
    assert "kc-alice" not in ids.profile and not ids.releases
    assert [u.keycloak_id for u in ids.unresolved] == ["kc-alice"] and ids.withheld == 1
    foreign = User("bob-sso", "bob@example.com", "internal_user", {})
    ids = resolve(want(moved), have(a, foreign), link_by_email="false")
    assert not ids.releases and "kc-alice" not in ids.profile
    admin = User("kc-bob", "bob@example.com", "proxy_admin", {MANAGED: True})
    ids = resolve(want(moved), have(a, admin), protected=frozenset({"kc-bob"}))
    assert not ids.releases and ids.withheld == 1


def test_tracked_user_follows_email_change_and_rename() -> None:
    linked = User("alice@example.com", "alice@example.com", "internal_user",
                  {MANAGED: True, KEYCLOAK_ID: "kc-alice", ID_FROM: "email"}, alias="alice")
    renamed = DesiredUser("kc-alice", "alice.smith", "alice.smith@example.com")
    ids = resolve(want(renamed), have(linked), "email")
    assert ids.keycloak_ids == {"alice@example.com": "kc-alice"}  # no second user
    assert ids.profile["alice@example.com"] == (
        ("user_alias", "alice", "alice.smith"),
        ("user_email", "alice@example.com", "alice.smith@example.com"))


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
    # twin's LiteLLM id under id_from email is bob's user: twin is left out (exit 9),
    # bob keeps his address
    assert plan.unresolved_identities == 1 and plan.withheld_emails == 0
    assert all("twin" in w for w in plan.warnings)
    again = make_plan(desired, apply_ops(actual, plan.operations), policy)
    assert not [op for op in again.operations if not isinstance(op, AddMember)]


# --- property: never two Keycloak users on one LiteLLM user ----------------------

NAMES = st.sampled_from(["a", "b", "c", "d"])
EMAILS = st.one_of(st.none(), st.sampled_from(["a@x", "A@x", "b@x", "c@x"]))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Desired, Actual, str, str]:
    rule = draw(st.sampled_from(["id", "username", "email"]))
    kc = draw(st.lists(st.tuples(NAMES, EMAILS), max_size=4, unique_by=lambda t: t[0]))
    users = tuple(DesiredUser(f"kc-{n}", n, e, draw(st.booleans())) for n, e in kc)
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
    return want(*users), have(*ll), rule, draw(st.sampled_from(["verified", "true", "false"]))


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_linking_never_merges_two_keycloak_users(world: tuple[Desired, Actual, str, str]) -> None:
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
