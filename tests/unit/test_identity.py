"""Linking rules (syncd.identity) and how the planner uses them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import ConfigError
from syncd.evidence import UserOutside
from syncd.identity import Release, check_rule, owner, resolve
from syncd.model import (
    ID_FROM,
    KEYCLOAK_ID,
    MANAGED,
    SCIM_ACTIVE,
    Actual,
    Desired,
    DesiredTeam,
    DesiredUser,
    Team,
    TeamSettings,
    User,
)
from syncd.operations import (
    AddMember,
    BlockUser,
    CreateUser,
    LinkUser,
    ReleaseEmail,
    RemoveMember,
    UpdateUserProfile,
)
from syncd.plan import Plan, Policy, make_plan
from tests.unit.policies import policy_at
from tests.unit.state_model import apply_ops

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def want(*users: DesiredUser, team: str = "t1", alias: str = "T") -> Desired:
    members = {u.user_id: "user" for u in users}
    t = DesiredTeam(team, alias, "/llm/t", TeamSettings(), members)  # type: ignore[arg-type]
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
        check_rule(have(made), "email")
    check_rule(have(made), "id")  # the rule it was made under


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


# --- property: email changes, departures and returns, run after run ----------------
#
# Issue 24: whatever Keycloak does to emails, no run ever gives one LiteLLM user to
# two active Keycloak users, nor leaves an active member without a LiteLLM user
# (with the default users.id_from: id; `username` and `email` ids can be taken by a
# departed user or shared, and those people are left out with exit 9).


@dataclass
class Person:
    """A Keycloak user, as the property changes it."""

    kc_id: str
    username: str
    email: str | None
    verified: bool
    enabled: bool = True
    in_group: bool = True
    deleted: bool = False

    @property
    def active(self) -> bool:
        return self.enabled and self.in_group and not self.deleted


ADDRESSES = st.sampled_from(["x@c", "X@c", "y@c", "z@c", None])
STEPS = st.tuples(
    st.sampled_from(["email", "disable", "enable", "leave", "join", "delete", "hire"]),
    st.integers(0, 5), ADDRESSES, st.booleans(),
)


def _fold(email: str | None) -> str:
    return (email or "").strip().casefold()


def _desired(people: list[Person]) -> Desired:
    return want(*(DesiredUser(p.kc_id, p.username, p.email, p.verified)
                  for p in people if p.active))


def _confirmed(op: object, people: dict[str, Person]) -> bool:
    """What syncd.confirm would say, from the model's Keycloak."""
    claim = getattr(op, "evidence", None)
    assert isinstance(claim, UserOutside)
    p = people.get(claim.keycloak_id)
    if p is None or p.deleted or not p.enabled:
        return True
    if claim.email is not None:
        return _fold(p.email) != _fold(claim.email)
    return not p.in_group


def _run(people: list[Person], actual: Actual, policy: Policy) -> tuple[Actual, Plan]:
    """One syncd run as sync.py makes it: the plan, everything constructive, then the
    destructive part that a fresh read confirms."""
    plan = make_plan(_desired(people), actual, policy)
    by_id = {p.kc_id: p for p in people}
    actual = apply_ops(actual, tuple(op for op in plan.operations if not op.DESTRUCTIVE))
    confirmed = tuple(op for op in plan.operations
                      if op.DESTRUCTIVE and _confirmed(op, by_id))
    return apply_ops(actual, confirmed), plan


def _check(people: list[Person], actual: Actual, plan: Plan, mode: str,
           linked_before: dict[str, str]) -> None:
    active = {p.kc_id: p for p in people if p.active}
    mine: dict[str, list[str]] = {}
    for u in actual.users.values():
        if (kc := owner(u)) is not None:
            mine.setdefault(kc, []).append(u.user_id)
    team = set(actual.teams["t1"].members)
    for kc in active:
        # every active member has exactly one LiteLLM user, in the team
        assert len(mine.get(kc, [])) == 1, (kc, mine.get(kc))
        assert mine[kc][0] in team
    assert plan.unresolved_identities == 0  # so the run exits 0
    # never two users with one address in LiteLLM (it would merge people at SSO login)
    emails = [_fold(u.email) for u in actual.users.values() if _fold(u.email)]
    assert len(emails) == len(set(emails)), emails
    # an SSO user is taken over only by its own address, verified unless told otherwise
    for uid, kc in ((u.user_id, owner(u)) for u in actual.users.values()):
        if uid.startswith("sso-") and kc is not None and uid not in linked_before:
            p = next(p for p in people if p.kc_id == kc)
            assert _fold(p.email) == uid.removeprefix("sso-")
            assert p.verified or mode == "true"
            linked_before[uid] = kc
    # and it stays with that one person
    for uid, kc in linked_before.items():
        if uid in actual.users:
            assert owner(actual.users[uid]) == kc


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(NAMES, ADDRESSES, st.booleans()), min_size=1, max_size=3,
                unique_by=lambda t: t[0]),
       st.lists(STEPS, min_size=1, max_size=8),
       st.sampled_from(["verified", "true", "false"]),
       st.sampled_from(["block", "delete"]))
def test_no_email_change_departure_or_return_merges_people_or_leaves_one_out(
    start: list[tuple[str, str | None, bool]],
    steps: list[tuple[str, int, str | None, bool]],
    mode: str, departures: str,
) -> None:
    people = [Person(f"kc-{n}", n, e, v) for n, e, v in start]
    sso = [User(f"sso-{e}", e, "internal_user", {"auth_provider": "generic"})
           for e in ("x@c", "y@c")]
    actual = Actual({"t1": Team("t1", "T", TeamSettings(), {}, {MANAGED: True})},
                    {u.user_id: u for u in sso}, {})
    clock = NOW
    linked: dict[str, str] = {}
    hires = 0
    for kind, who, email, verified in [("start", 0, None, False), *steps]:
        p = people[who % len(people)]
        if kind == "email" and not p.deleted:
            p.email, p.verified = email, verified
        elif kind == "disable":
            p.enabled = False
        elif kind == "enable":
            p.enabled = True
        elif kind == "leave":
            p.in_group = False
        elif kind == "join":
            p.in_group = True
        elif kind == "delete":
            p.deleted = True
        elif kind == "hire":
            hires += 1
            people.append(Person(f"kc-new{hires}", f"new{hires}", email, verified))
        clock += timedelta(days=1)
        policy = policy_at(clock, link_by_email=mode, departure_policy=departures,  # type: ignore[arg-type]
                           departure_grace=timedelta(0), delete_users=True,
                           brake_released=True)
        actual, plan = _run(people, actual, policy)
        _check(people, actual, plan, mode, linked)
        # the next run without a change in Keycloak converges (an address that moves
        # between two active people arrives one run later)
        for _ in range(2):
            actual, again = _run(people, actual, policy)
            _check(people, actual, again, mode, linked)
        left = make_plan(_desired(people), actual, policy).operations
        by_id = {p.kc_id: p for p in people}
        # only a release that a fresh read refuses, run after run, may stay: the
        # departed user's Keycloak account still has the address (a realm that
        # allows duplicate emails), and the new holder has access without it
        assert all(isinstance(op, ReleaseEmail) and not _confirmed(op, by_id)
                   for op in left), left


# --- the release and the alias clash, as planned ------------------------------------


def test_the_release_is_planned_with_its_audit_trail_and_fresh_evidence() -> None:
    old = User("kc-old", "alice@example.com", "internal_user",
               {MANAGED: True, "note": "kept", SCIM_ACTIVE: False,
                "syncd_blocked_at": "2026-01-01T00:00:00Z"})
    plan = make_plan(want(ALICE), have(old), policy_at(NOW))
    create = next(op for op in plan.operations if isinstance(op, CreateUser))
    assert create.email is None  # access first: never refused for the address
    release = next(op for op in plan.operations if isinstance(op, ReleaseEmail))
    assert release.DESTRUCTIVE and (release.user_id, release.to_user_id) == ("kc-old", "kc-alice")
    assert release.metadata["syncd_released_email"] == "alice@example.com"
    assert release.metadata["note"] == "kept" and release.metadata[SCIM_ACTIVE] is False
    assert release.metadata["syncd_blocked_at"] == "2026-01-01T00:00:00Z"
    assert release.evidence == UserOutside("kc-old", "kc-old", email="alice@example.com")
    assert plan.unresolved_identities == 0 and plan.withheld_emails == 0
    after = apply_ops(have(old), plan.operations)
    assert after.users["kc-alice"].email == "alice@example.com"
    assert after.users["kc-old"].email == ""
    assert not make_plan(want(ALICE), after, policy_at(NOW)).operations


def test_no_release_from_a_user_deleted_in_the_same_run() -> None:
    """LiteLLM's /user/update would re-create a deleted user (it upserts)."""
    old = User("kc-old", "alice@example.com", "internal_user",
               {MANAGED: True, SCIM_ACTIVE: False, "syncd_blocked_at": "2026-01-01T00:00:00Z"})
    policy = policy_at(NOW, departure_policy="delete", delete_users=True, brake_released=True)
    plan = make_plan(want(ALICE), have(old), policy)
    kinds = {op.KIND for op in plan.operations}
    assert "delete_user" in kinds and "release_email" not in kinds
    after = apply_ops(have(old), plan.operations)
    again = make_plan(want(ALICE), after, policy)  # the address is free: given now
    assert [op.changes for op in again.operations if isinstance(op, UpdateUserProfile)] == [
        (("user_email", None, "alice@example.com"),)]


def test_an_alias_clash_is_named_and_the_other_team_left_alone() -> None:
    hand = Team("hand-red", "Red", TeamSettings(), {"someone": "user"}, {"owner": "ops"})
    actual = Actual({"hand-red": hand}, {}, {})
    plan = make_plan(want(BOB, alias="red"), actual, policy_at(NOW))
    named = [w for w in plan.warnings if "hand-red" in w]
    assert len(named) == 1 and "rename" in named[0] and "adopt_existing" in named[0]
    assert all(op.team_id != "hand-red" for op in plan.operations)
    clean = make_plan(want(BOB, alias="red"), Actual({}, {}, {}), policy_at(NOW))
    assert not clean.warnings
