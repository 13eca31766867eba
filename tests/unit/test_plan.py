"""The planner: concrete rules first, then properties over random states."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.evidence import GroupGone, UserOutside
from syncd.model import (
    ARCHIVED_AT,
    BLOCKED_AT,
    DEFAULT_USER_ID,
    GROUP_PATH,
    KEY_BLOCKED,
    KEYCLOAK_ID,
    MANAGED,
    SCIM_ACTIVE,
    Actual,
    Desired,
    DesiredTeam,
    DesiredUser,
    Key,
    Scope,
    Team,
    TeamSettings,
    User,
)
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
    UnblockKey,
    UnblockTeam,
    UnblockUser,
    UpdateTeam,
)
from syncd.plan import Plan, Policy, make_plan
from tests.unit.policies import policy_at
from tests.unit.state_model import apply_ops

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LONG_AGO = "2026-09-01T00:00:00Z"
POLICY = policy_at(NOW, brake_released=True)
MARK = {MANAGED: True}


def desired(*teams: DesiredTeam, extra_users: tuple[str, ...] = ()) -> Desired:
    users = {u: DesiredUser(u, f"name-{u}", f"{u}@example.com")
             for t in teams for u in t.members}
    users.update({u: DesiredUser(u, f"name-{u}", None) for u in extra_users})
    return Desired(teams={t.team_id: t for t in teams}, users=users, groups_seen=len(teams))


def luser(uid: str, **kw: object) -> User:
    """A LiteLLM user with the email `desired` gives the Keycloak user of that id."""
    return User(uid, f"{uid}@example.com", **kw)  # type: ignore[arg-type]


def dteam(tid: str, members: dict[str, str], alias: str | None = None,
          settings: TeamSettings | None = None) -> DesiredTeam:
    return DesiredTeam(tid, alias or f"alias-{tid}", f"/llm/{tid}",
                       settings or TeamSettings(), members)  # type: ignore[arg-type]


def ateam(tid: str, members: dict[str, str], *, managed: bool = True, **kw: object) -> Team:
    meta = {MANAGED: True, GROUP_PATH: f"/llm/{tid}"} if managed else {}
    meta.update(kw.pop("metadata", {}))  # type: ignore[arg-type]
    return Team(tid, kw.pop("alias", f"alias-{tid}"), kw.pop("settings", TeamSettings()),  # type: ignore[arg-type]
                members, meta, **kw)  # type: ignore[arg-type]


def actual(teams: list[Team] = [], users: list[User] = [], keys: list[Key] = []) -> Actual:  # noqa: B006
    return Actual({t.team_id: t for t in teams}, {u.user_id: u for u in users},
                  {k.token: k for k in keys})


def kinds(plan: Plan) -> list[str]:
    return [op.KIND for op in plan.operations]


# --- creation and drift ---------------------------------------------------------


def test_empty_litellm_gets_users_teams_and_members() -> None:
    plan = make_plan(desired(dteam("t1", {"a": "user", "b": "user"})), actual(), POLICY)
    assert kinds(plan) == ["create_user", "create_user", "create_team", "add_member", "add_member"]
    assert isinstance(plan.operations[2], CreateTeam)
    assert plan.operations[2].metadata == {MANAGED: True, GROUP_PATH: "/llm/t1"}


def test_in_sync_state_plans_nothing_and_ignores_default_user_id() -> None:
    want = desired(dteam("t1", {"a": "user"}))
    have = actual([ateam("t1", {"a": "user", DEFAULT_USER_ID: "admin"})],
                  [User("a", "a@example.com", "internal_user", MARK)])
    assert not make_plan(want, have, POLICY)


def test_renamed_group_changes_alias_not_team() -> None:
    want = desired(dteam("t1", {}, alias="new-name"))
    have = actual([ateam("t1", {}, alias="old-name")])
    plan = make_plan(want, have, POLICY)
    assert kinds(plan) == ["update_team"]
    op = plan.operations[0]
    assert isinstance(op, UpdateTeam)
    assert op.changes == (("team_alias", "old-name", "new-name"),)


def test_settings_drift_keeps_foreign_metadata_and_unmanaged_fields() -> None:
    want = desired(dteam("t1", {}, settings=TeamSettings(max_budget=50.0, models=("m1",))))
    have = actual([ateam("t1", {}, settings=TeamSettings(max_budget=10.0, tpm_limit=7,
                                                         models=("m1",)),
                         metadata={"owner": "finance"})])
    op = make_plan(want, have, POLICY).operations[0]
    assert isinstance(op, UpdateTeam)
    assert op.changes == (("max_budget", 10.0, 50.0),)
    assert op.metadata["owner"] == "finance"


def test_unmanaged_team_with_same_id_is_skipped_unless_adopting() -> None:
    want = desired(dteam("t1", {"a": "user"}))
    have = actual([ateam("t1", {"x": "user"}, managed=False)])
    plan = make_plan(want, have, POLICY)
    assert [s.team_id for s in plan.skipped] == ["t1"]
    assert all(op.team_id != "t1" for op in plan.operations)
    adopted = make_plan(want, have, policy_at(NOW, adopt_existing=True))
    assert "update_team" in kinds(adopted) and "remove_member" in kinds(adopted)


def test_admin_role_without_licence_is_user_with_warning() -> None:
    want = desired(dteam("t1", {"a": "admin"}))
    plan = make_plan(want, actual(), POLICY)
    add = [op for op in plan.operations if isinstance(op, AddMember)]
    assert add[0].role == "user"
    assert plan.warnings and "enterprise" in plan.warnings[0]
    licensed = make_plan(want, actual(), policy_at(NOW, enterprise_license=True))
    # Licensed: added as user (access first), then promoted; the proxy may refuse
    # only the promotion, and the applier never changes a role on its own.
    assert [op.role for op in licensed.operations if isinstance(op, AddMember)] == ["user"]
    assert [(op.old, op.new) for op in licensed.operations
            if isinstance(op, ChangeMemberRole)] == [("user", "admin")]


# --- leaving, departing, returning ---------------------------------------------


def test_member_who_left_is_removed_and_team_keys_deleted() -> None:
    want = desired(dteam("t1", {"a": "user"}), dteam("t2", {"b": "user"}))
    have = actual(
        [ateam("t1", {"a": "user", "b": "user"}), ateam("t2", {"b": "user"})],
        [luser("a", metadata=MARK), luser("b", metadata=MARK)],
        [Key("k1", "b", "t1", alias="b-laptop"), Key("k2", "b", "t2"), Key("k3", "b", None)],
    )
    plan = make_plan(want, have, POLICY)
    assert [(op.KIND, op.team_id) for op in plan.operations] == [
        ("remove_member", "t1"), ("delete_key", "t1")]
    delete = plan.operations[1]
    assert isinstance(delete, DeleteKey) and delete.label == "b-laptop"


def test_departed_user_is_blocked_with_markers_and_all_keys_blocked() -> None:
    want = desired(dteam("t1", {"a": "user"}))
    have = actual(
        [ateam("t1", {"a": "user", "d": "user"})],
        [luser("a", metadata=MARK), luser("d", metadata={**MARK, "dept": "x"})],
        [Key("kp", "d", None), Key("kt", "d", "t1"), Key("kx", "d", "other"),
         Key("kadmin", "d", None, blocked=True)],
    )
    plan = make_plan(want, have, POLICY)
    ops = plan.operations
    block_user = next(op for op in ops if isinstance(op, BlockUser))
    assert block_user.metadata[SCIM_ACTIVE] is False and block_user.metadata["dept"] == "x"
    assert block_user.metadata[BLOCKED_AT] == "2026-11-01T12:00:00Z"
    # reversible: every key blocked (the team key too), nothing deleted, no membership removed
    assert {op.token for op in ops if isinstance(op, BlockKey)} == {"kp", "kt", "kx"}
    assert not any(op.IRREVERSIBLE for op in ops)
    assert all(op.metadata[KEY_BLOCKED] is True for op in ops if isinstance(op, BlockKey))
    # the kill switch is thrown before anything else destructive
    assert next(op.KIND for op in ops if op.DESTRUCTIVE) == "block_user"


def test_returning_user_gets_back_only_syncd_blocked_keys() -> None:
    want = desired(dteam("t1", {"d": "user"}))
    blocked_meta = {**MARK, SCIM_ACTIVE: False, BLOCKED_AT: LONG_AGO}
    have = actual(
        [ateam("t1", {})], [luser("d", metadata=blocked_meta)],
        [Key("mine", "d", None, blocked=True, metadata={KEY_BLOCKED: True, BLOCKED_AT: LONG_AGO}),
         Key("admins", "d", None, blocked=True)],
    )
    plan = make_plan(want, have, POLICY)
    unblock = next(op for op in plan.operations if isinstance(op, UnblockUser))
    assert unblock.metadata == {MANAGED: True, SCIM_ACTIVE: True}
    keys = [op for op in plan.operations if isinstance(op, UnblockKey)]
    assert [(k.token, k.unblock, dict(k.metadata)) for k in keys] == [("mine", True, {})]


def test_delete_policy_waits_for_grace_then_deletes() -> None:
    want = desired(dteam("t1", {"a": "user"}))
    base = {**MARK, SCIM_ACTIVE: False}
    policy = policy_at(NOW, departure_policy="delete", departure_grace=timedelta(days=30),
                    brake_released=True)
    recent = actual([ateam("t1", {"a": "user"})],
                    [luser("a", metadata=MARK),
                     luser("d", metadata={**base, BLOCKED_AT: "2026-10-25T00:00:00Z"})],
                    [Key("kd", "d", None, blocked=True, metadata={KEY_BLOCKED: True})])
    assert not make_plan(want, recent, policy)
    old = actual([ateam("t1", {"a": "user"})],
                 [luser("a", metadata=MARK), luser("d", metadata={**base, BLOCKED_AT: LONG_AGO})],
                 [Key("kd", "d", None, blocked=True, metadata={KEY_BLOCKED: True})])
    assert kinds(make_plan(want, old, policy)) == ["delete_key"]
    member = actual([ateam("t1", {"a": "user", "d": "user"})],
                    [luser("a", metadata=MARK),
                     luser("d", metadata={**base, BLOCKED_AT: LONG_AGO})],
                    [Key("kd", "d", "t1", blocked=True, metadata={KEY_BLOCKED: True})])
    assert kinds(make_plan(want, member, policy)) == ["remove_member", "delete_key"]
    with_users = replace(policy, delete_users=True)
    assert [type(op) for op in make_plan(want, old, with_users).operations] == [DeleteUser]


def test_removed_group_blocks_team_keeps_members_then_deleted_after_grace() -> None:
    want = desired(dteam("t1", {"a": "user"}))
    have = actual([ateam("t1", {"a": "user"}), ateam("gone", {"a": "user", "b": "user"})],
                  [luser("a", metadata=MARK), luser("b", metadata=MARK)],
                  [Key("ka", "a", "gone")])
    plan = make_plan(want, have, POLICY)
    assert {(op.KIND, op.team_id) for op in plan.operations if op.team_id == "gone"} == {
        ("block_team", "gone")}
    # b is in no selected group any more: blocked, not removed
    assert {op.KIND for op in plan.operations if op.user_id == "b"} == {
        "block_user"}
    block = next(op for op in plan.operations if isinstance(op, BlockTeam))
    assert block.metadata[ARCHIVED_AT] == "2026-11-01T12:00:00Z"
    archived = actual([ateam("t1", {"a": "user"}),
                       ateam("gone", {"a": "user"}, blocked=True,
                             metadata={ARCHIVED_AT: LONG_AGO})],
                      [luser("a", metadata=MARK)], [Key("ka", "a", "gone")])
    assert not make_plan(want, archived, POLICY)
    delete = policy_at(NOW, removed_team_policy="delete", brake_released=True)
    assert [type(op) for op in make_plan(want, archived, delete).operations] == [DeleteTeam]
    # and a group that comes back is unblocked
    back = desired(dteam("t1", {"a": "user"}), dteam("gone", {"a": "user"}))
    assert [type(op) for op in make_plan(back, archived, POLICY).operations] == [UnblockTeam]


def test_protected_users_and_unmanaged_teams_are_never_touched() -> None:
    want = desired(dteam("t1", {}))
    have = actual(
        [ateam("t1", {"root": "admin", DEFAULT_USER_ID: "admin", "ign": "user"}),
         ateam("hand", {"x": "user"}, managed=False)],
        [User("root", role="proxy_admin", metadata=MARK), User("ign", "ign@x", metadata=MARK),
         User(DEFAULT_USER_ID, role="proxy_admin"), User("x")],
        [Key("svc", None, "t1"), Key("rootkey", "root", "t1")],
    )
    policy = policy_at(NOW, ignore_users=frozenset({"ign@x"}))
    assert not make_plan(want, have, policy)


# --- the brake -------------------------------------------------------------------


def _departures(n: int, size: int = 100, keys: int = 3) -> tuple[Desired, Actual]:
    """`size` members of one team, the first `n` departed; each holds `keys` keys."""
    members = {f"u{i}": "user" for i in range(size)}
    want = desired(dteam("t1", {u: r for u, r in list(members.items())[n:]}))
    have = actual([ateam("t1", dict(members))],
                  [luser(u, metadata=MARK) for u in members],
                  [Key(f"k-{u}-{j}", u, "t1" if j else None) for u in members for j in range(keys)])
    return want, have


def test_brake_counts_people_not_calls() -> None:
    policy = policy_at(NOW, max_blocked=10, max_blocked_fraction=1.0)
    want, have = _departures(10)  # 10 people, 40 operations
    at = make_plan(want, have, policy)
    assert not at.braked and at.destructive_count == 40
    want, have = _departures(11)
    over = make_plan(want, have, policy)
    assert over.braked and len(over.held_back) == 44
    assert not any(op.DESTRUCTIVE for op in over.operations)
    assert "max_blocked=10" in (over.brake_reason or "")


def test_brake_fraction_and_force() -> None:
    policy = policy_at(NOW, max_blocked=1000, max_blocked_fraction=0.10)
    want, have = _departures(10)  # 10 of 101 managed users and teams: under 10 %
    assert not make_plan(want, have, policy).braked
    want, have = _departures(11)
    assert make_plan(want, have, policy).braked
    forced = replace(policy, brake_released=True)
    assert not make_plan(want, have, forced).braked


def test_small_organisation_can_always_cut_off_a_few_leavers() -> None:
    # 20 memberships: the fractions do not apply below 100 (as Okta does).
    for leavers in (1, 3):
        want, have = _departures(leavers, size=20)
        plan = make_plan(want, have, policy_at(NOW))
        assert not plan.braked
        assert sum(isinstance(op, BlockUser) for op in plan.operations) == leavers


def test_irreversible_limit_holds_only_the_irreversible_part() -> None:
    # five people leave t1 but stay in t2 (irreversible: LiteLLM deletes their t1 keys),
    # two depart altogether (reversible block)
    stay = {f"s{i}": "user" for i in range(5)}
    want = desired(dteam("t1", {"a": "user"}), dteam("t2", {"a": "user", **stay}))
    have = actual(
        [ateam("t1", {"a": "user", **stay, "d1": "user", "d2": "user"}),
         ateam("t2", {"a": "user", **stay})],
        [User(u, metadata=MARK) for u in ["a", *stay, "d1", "d2"]],
    )
    plan = make_plan(want, have, policy_at(NOW, max_deleted=4))
    assert plan.braked and "max_deleted=4" in (plan.brake_reason or "")
    assert {op.KIND for op in plan.held_back} == {"remove_member"}
    assert {op.user_id for op in plan.operations if isinstance(op, BlockUser)} == {"d1", "d2"}
    assert not make_plan(want, have, policy_at(NOW, max_deleted=5)).braked


def test_brake_keeps_non_destructive_part() -> None:
    want, have = _departures(60)
    want = Desired({**want.teams, "t2": dteam("t2", {"new": "user"})},
                   {**want.users, "new": DesiredUser("new", "new", None)})
    plan = make_plan(want, have, policy_at(NOW))
    assert plan.braked
    assert {type(op) for op in plan.operations} == {CreateUser, CreateTeam, AddMember}


# --- ownership, adoption, evidence ------------------------------------------------


def test_user_without_marker_is_only_removed_from_the_managed_team() -> None:
    want = desired(dteam("t1", {"a": "user"}))
    have = actual(
        [ateam("t1", {"a": "user", "sso": "user"}), ateam("hand", {"sso": "user"}, managed=False)],
        [luser("a", metadata=MARK), User("sso", "sso@x")],
        [Key("kp", "sso", None), Key("kh", "sso", "hand"), Key("kt", "sso", "t1")],
    )
    plan = make_plan(want, have, POLICY)
    assert [(op.KIND, op.team_id) for op in plan.operations] == [("remove_member", "t1")]


def test_adoption_leaves_keys_of_non_members_alone() -> None:
    want = desired(dteam("t1", {"a": "user"}))
    have = actual([ateam("t1", {"a": "user"}, managed=False)], [luser("a", metadata=MARK)],
                  [Key("bot", "ci-bot", "t1"), Key("svc", None, "t1")])
    plan = make_plan(want, have, policy_at(NOW, adopt_existing=True))
    assert not any(op.DESTRUCTIVE for op in plan.operations)


def test_every_destructive_operation_carries_its_claim() -> None:
    want = desired(dteam("t1", {"a": "user"}), dteam("t2", {"b": "user"}))
    have = actual(
        [ateam("t1", {"a": "user", "b": "user", "d": "user"}), ateam("t2", {"b": "user"}),
         ateam("gone", {})],
        [luser("a", metadata=MARK), luser("b", metadata=MARK),
         luser("d", metadata={**MARK, KEYCLOAK_ID: "kc-d"})],
        [Key("kb", "b", "t1"), Key("kd", "d", None)],
    )
    plan = make_plan(want, have, POLICY)
    claims = {(op.KIND, op.user_id or op.team_id): op.evidence  # type: ignore[attr-defined]
              for op in plan.operations if op.DESTRUCTIVE}
    assert claims == {
        ("remove_member", "b"): UserOutside("b", "b", frozenset({"t1"})),
        ("delete_key", "b"): UserOutside("b", "b", frozenset({"t1"})),
        ("block_user", "d"): UserOutside("d", "kc-d"),
        ("block_key", "d"): UserOutside("d", "kc-d"),
        ("block_team", "gone"): GroupGone("gone"),
    }


# --- properties -------------------------------------------------------------------

USERS = [f"u{i}" for i in range(6)] + [DEFAULT_USER_ID, "padmin"]
TEAMS = ["t0", "t1", "t2", "t3"]
roles = st.sampled_from(["user", "admin"])
settings_st = st.builds(
    TeamSettings,
    models=st.none() | st.tuples(st.sampled_from(["a", "b"])),
    max_budget=st.none() | st.sampled_from([1.0, 5.0]),
    tpm_limit=st.none() | st.sampled_from([10, 20]),
)
stamps = st.none() | st.sampled_from([LONG_AGO, "2026-10-31T00:00:00Z", "garbage"])


@st.composite
def states(draw: st.DrawFn) -> tuple[Desired, Actual, Policy]:
    real_users = USERS[:6]
    dteams = []
    for tid in draw(st.lists(st.sampled_from(TEAMS), unique=True)):
        members = draw(st.dictionaries(st.sampled_from(real_users), roles, max_size=4))
        dteams.append(DesiredTeam(tid, draw(st.sampled_from(["x", "y"])), f"/{tid}",
                                  draw(settings_st), members))
    want = desired(*dteams)
    ateams = []
    for tid in draw(st.lists(st.sampled_from(TEAMS), unique=True)):
        meta: dict[str, object] = {}
        if draw(st.booleans()):
            meta[MANAGED] = True
        if (s := draw(stamps)) is not None:
            meta[ARCHIVED_AT] = s
        if draw(st.booleans()):
            meta["other"] = 1
        members = draw(st.dictionaries(st.sampled_from(USERS), roles, max_size=5))
        ateams.append(Team(tid, draw(st.none() | st.sampled_from(["x", "y"])),
                           draw(settings_st), members, meta, draw(st.booleans())))
    # Proxy admins always have a user row saying so (that is what protects them).
    ausers = [User("padmin", None, "proxy_admin", {}), User(DEFAULT_USER_ID, None, "proxy_admin")]
    for uid in draw(st.lists(st.sampled_from(USERS[:6]), unique=True)):
        meta = {}
        if draw(st.booleans()):
            meta[MANAGED] = True
        if (s := draw(stamps)) is not None:
            meta[BLOCKED_AT] = s
        if draw(st.booleans()):
            meta[SCIM_ACTIVE] = draw(st.booleans())
        ausers.append(User(uid, None, "internal_user", meta))
    akeys = []
    for i in range(draw(st.integers(0, 6))):
        kmeta = {KEY_BLOCKED: True, BLOCKED_AT: LONG_AGO} if draw(st.booleans()) else {}
        akeys.append(Key(f"k{i}", draw(st.none() | st.sampled_from(USERS)),
                         draw(st.none() | st.sampled_from([*TEAMS, "foreign"])),
                         blocked=draw(st.booleans()), metadata=kmeta))
    policy = policy_at(
        NOW,
        adopt_existing=draw(st.booleans()),
        enterprise_license=draw(st.booleans()),
        departure_policy=draw(st.sampled_from(["block", "delete"])),
        delete_users=draw(st.booleans()),
        removed_team_policy=draw(st.sampled_from(["block", "delete"])),
        brake_released=True,
    )
    return want, actual(ateams, ausers, akeys), policy


PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(states())
def test_applying_then_planning_again_yields_nothing(state: tuple[Desired, Actual, Policy]) -> None:
    want, have, policy = state
    plan = make_plan(want, have, policy)
    after = apply_ops(have, plan.operations)
    again = make_plan(want, after, policy)
    assert not again, again.operations


@PROPS
@given(states())
def test_applied_plan_reaches_the_desired_state(state: tuple[Desired, Actual, Policy]) -> None:
    want, have, policy = state
    plan = make_plan(want, have, policy)
    after = apply_ops(have, plan.operations)
    skipped = {s.team_id for s in plan.skipped}
    for tid, team in want.teams.items():
        if tid in skipped:
            continue
        got = after.teams[tid]
        assert got.managed and got.alias == team.alias
        assert not team.settings.drift_from(got.settings)
        real = {u: r for u, r in got.members.items() if u in team.members}
        expect = {u: (r if policy.enterprise_license else "user") for u, r in team.members.items()}
        assert real == expect
    for uid in want.users:
        assert uid in after.users
        user = after.users[uid]
        if user.role != "proxy_admin":
            assert not user.kill_switch_on


@PROPS
@given(states())
def test_plans_stay_inside_the_managed_set(state: tuple[Desired, Actual, Policy]) -> None:
    want, have, policy = state
    plan = make_plan(want, have, policy)
    managed = set(have.managed_teams)
    desired_owned = {t for t in want.teams if t not in {s.team_id for s in plan.skipped}}
    for op in plan.operations:
        team = op.team_id
        if team is not None and not isinstance(op, DeleteKey | BlockKey):
            assert team in managed | desired_owned
        user = op.user_id
        if op.DESTRUCTIVE and user is not None:
            assert user not in (DEFAULT_USER_ID, "padmin")


@PROPS
@given(states())
def test_never_revokes_a_key_of_a_current_member(state: tuple[Desired, Actual, Policy]) -> None:
    want, have, policy = state
    plan = make_plan(want, have, policy)
    for op in plan.operations:
        owned = set(want.teams) - {s.team_id for s in plan.skipped}
        if isinstance(op, DeleteKey | BlockKey) and op.team_id in owned:
            assert op.user_id not in want.teams[op.team_id].members


@PROPS
@given(states())
def test_plans_are_deterministic(state: tuple[Desired, Actual, Policy]) -> None:
    want, have, policy = state
    reordered = Actual(dict(reversed(list(have.teams.items()))),
                       dict(reversed(list(have.users.items()))),
                       dict(reversed(list(have.keys.items()))))
    plan = make_plan(want, have, policy)
    assert plan == make_plan(want, reordered, policy)
    keys = [op.sort_key() for op in plan.operations]
    assert len(keys) == len(set(keys))  # each change is planned once


@PROPS
@given(states())
def test_every_destructive_operation_has_a_matching_claim(
    state: tuple[Desired, Actual, Policy]
) -> None:
    want, have, policy = state
    plan = make_plan(want, have, policy)
    for op in (*plan.operations, *plan.held_back):
        if not op.DESTRUCTIVE:
            continue
        claim = op.evidence  # type: ignore[attr-defined]
        if isinstance(claim, UserOutside):
            assert claim.user_id == op.user_id  # type: ignore[attr-defined]
            if claim.teams is not None:  # leaving one team: only that team's steps
                assert op.team_id in claim.teams
        else:
            assert isinstance(claim, GroupGone) and claim.team_id == op.team_id


@PROPS
@given(states())
def test_no_irreversible_step_within_the_grace_period(
    state: tuple[Desired, Actual, Policy]
) -> None:
    want, have, policy = state
    plan = make_plan(want, have, policy)
    for op in plan.operations:
        if not op.IRREVERSIBLE:
            continue
        user = op.user_id
        departed = user is not None and user not in want.users
        if departed and (have.users.get(user) or User(str(user))).managed:
            # a departed user of syncd's: only after their grace period, under "delete"
            assert policy.departure_policy == "delete"
            stamp = have.users[user].metadata.get(BLOCKED_AT)
            assert stamp == LONG_AGO, (op, stamp)
            continue
        if isinstance(op, DeleteTeam):
            assert policy.removed_team_policy == "delete"
            assert have.teams[op.team_id].metadata.get(ARCHIVED_AT) == LONG_AGO
        if op.team_id is not None and op.team_id not in want.teams and not isinstance(
            op, DeleteTeam
        ):
            # nothing is removed from, or deleted in, an archived team
            assert isinstance(op, DeleteKey) and user is not None and user not in want.users


def _working_keys(state: Actual, user_id: str) -> set[str]:
    user = state.users.get(user_id)
    if user is None or user.kill_switch_on:
        return set()
    return {k.token for k in state.keys.values() if k.user_id == user_id and not k.blocked
            and not (k.team_id in state.teams and state.teams[k.team_id].blocked)}


@PROPS
@given(states(), st.data())
def test_departure_then_return_restores_the_same_working_keys(
    state: tuple[Desired, Actual, Policy], data: st.DataObject
) -> None:
    want, have, policy = state
    settled = apply_ops(have, make_plan(want, have, policy).operations)
    if not want.users:
        return
    uid = data.draw(st.sampled_from(sorted(want.users)))
    without = Desired(
        {tid: DesiredTeam(t.team_id, t.alias, t.path, t.settings,
                          {u: r for u, r in t.members.items() if u != uid})
         for tid, t in want.teams.items()},
        {u: d for u, d in want.users.items() if u != uid},
    )
    gone = apply_ops(settled, make_plan(without, settled, policy).operations)
    assert not _working_keys(gone, uid)
    back = apply_ops(gone, make_plan(want, gone, policy).operations)
    assert _working_keys(back, uid) == _working_keys(settled, uid)


@PROPS
@given(states(), st.sets(st.sampled_from(USERS)), st.sets(st.sampled_from(TEAMS)))
def test_a_scoped_plan_is_the_full_plans_part_for_its_subjects(
    state: tuple[Desired, Actual, Policy], users: set[str], teams: set[str]
) -> None:
    """The fast path plans with a scope: exactly the full plan's operations on
    those teams and users (brake released here), nothing else."""
    want, have, policy = state
    scope = Scope(users=frozenset(users), teams=frozenset(teams))
    full = make_plan(want, have, policy)
    scoped = make_plan(want, have, policy, scope)
    expected = [op for op in full.operations
                if op.team_id in teams or (op.user_id is not None and op.user_id in users)]
    assert list(scoped.operations) == expected


def test_a_scoped_plan_is_braked_on_its_own_operations() -> None:
    want, have = _departures(30)
    policy = policy_at(NOW)
    full = make_plan(want, have, policy)
    assert full.braked  # 30 leavers are over the default 25
    one = next(op.user_id for op in full.held_back if op.user_id is not None)
    scoped = make_plan(want, have, policy, Scope(users=frozenset({one})))
    assert not scoped.braked and {op.user_id for op in scoped.operations} == {one}
