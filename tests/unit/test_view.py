"""The kept view of LiteLLM: fresh rows win, and disagreements are named."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncd.model import MANAGED, Actual, Key, Team, TeamSettings, User
from syncd.view import Rows, differences, overlay, rows_around, subjects_of, unsettled_teams


def team(tid: str, *members: str) -> Team:
    return Team(tid, tid, TeamSettings(), {m: "user" for m in members}, {MANAGED: True})


def key(token: str, user: str | None, team_id: str | None) -> Key:
    return Key(token, user, team_id)


VIEW = Actual(
    teams={"t1": team("t1", "u1", "u2"), "t2": team("t2", "u2")},
    users={"u1": User("u1"), "u2": User("u2")},
    keys={"k1": key("k1", "u1", "t1"), "k2": key("k2", "u2", "t2"), "k3": key("k3", "u2", None)},
    service_user_id="svc",
)


def test_fresh_rows_replace_the_kept_ones() -> None:
    rows = Rows(
        users={"u1": None},  # gone from LiteLLM
        teams={"t1": team("t1", "u2")},
        user_keys={"u1": ()},
        team_keys={"t1": ()},
    )
    out = overlay(VIEW, rows)
    assert set(out.users) == {"u2"}
    assert out.teams["t1"].members == {"u2": "user"}
    assert set(out.keys) == {"k2", "k3"}
    assert out.service_user_id == "svc"


def test_rows_that_agree_are_no_difference_and_others_are_named() -> None:
    same = Rows(users={"u2": User("u2")}, teams={"t2": team("t2", "u2")},
                user_keys={"u2": (VIEW.keys["k2"], VIEW.keys["k3"])},
                team_keys={"t2": (VIEW.keys["k2"],)})
    assert differences(VIEW, same) == []
    new_key = Rows(team_keys={"t2": (VIEW.keys["k2"], key("k9", "u2", "t2"))})
    assert differences(VIEW, new_key) == []  # people make keys all day
    hand_made = Rows(teams={"t2": team("t2", "u2", "intruder")}, users={"u1": None})
    assert differences(VIEW, hand_made) == ["user u1", "team t2"]


def test_the_teams_a_plan_depends_on_include_the_users_teams() -> None:
    users, teams = subjects_of(VIEW, {"u1"}, set())
    assert users == {"u1"} and teams == {"t1"}


def test_only_rosters_that_disagree_with_a_fresh_user_row_are_unsettled() -> None:
    agrees = Rows(users={"u2": User("u2")}, user_teams={"u2": ("t1", "t2")})
    assert unsettled_teams(VIEW, agrees) == set()
    added_by_hand = Rows(users={"u1": User("u1")}, user_teams={"u1": ("t1", "t2")})
    assert unsettled_teams(VIEW, added_by_hand) == {"t2"}
    removed_by_hand = Rows(users={"u2": User("u2")}, user_teams={"u2": ("t2",)})
    assert unsettled_teams(VIEW, removed_by_hand) == {"t1"}
    already_read = Rows(users={"u2": User("u2")}, teams={"t1": team("t1")},
                        user_teams={"u2": ("t2",)})
    assert unsettled_teams(VIEW, already_read) == set()
    gone = Rows(users={"u1": None})
    assert unsettled_teams(VIEW, gone) == {"t1"}


@given(st.sets(st.sampled_from(["u1", "u2", "u3"])), st.sets(st.sampled_from(["t1", "t2", "t3"])))
def test_overlaying_the_views_own_rows_changes_nothing(users: set[str], teams: set[str]) -> None:
    rows = Rows(
        users={u: VIEW.users.get(u) for u in users},
        teams={t: VIEW.teams.get(t) for t in teams},
        user_keys={u: tuple(k for k in VIEW.keys.values() if k.user_id == u) for u in users},
        team_keys={t: tuple(k for k in VIEW.keys.values() if k.team_id == t) for t in teams},
    )
    assert overlay(VIEW, rows) == VIEW
    assert differences(VIEW, rows) == []


def test_a_read_around_some_users_makes_every_team_and_key_fresh() -> None:
    """t2 was deleted by hand, t3 made by hand; k1 deleted, k9 made; u1 is the
    user read. The rest of the users stay as kept."""
    t1 = team("t1", "u1", "u3")
    t3 = team("t3", "u1")
    k9 = key("k9", "u2", "t1")
    rows = rows_around(VIEW, {"u1": User("u1", email="new@example.com")},
                       [t1, t3], [VIEW.keys["k3"], k9])
    out = overlay(VIEW, rows)
    assert out.teams == {"t1": t1, "t3": t3}
    assert out.keys == {"k3": VIEW.keys["k3"], "k9": k9}
    assert out.users == {"u1": User("u1", email="new@example.com"), "u2": User("u2")}
    assert rows.user_teams == {"u1": ("t1", "t3")}
    assert unsettled_teams(VIEW, rows) == set()
    assert differences(VIEW, rows) == ["user u1", "team t1", "team t2", "team t3"]


TEAMS = st.lists(st.sampled_from(["t1", "t2", "t3"]), unique=True).flatmap(
    lambda tids: st.tuples(*(
        st.sets(st.sampled_from(["u1", "u2", "u3"])).map(lambda ms, t=t: team(t, *sorted(ms)))
        for t in tids
    ))
)
KEYS = st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3", None]),
                          st.sampled_from(["t1", "t2", "t3", None])), max_size=6).map(
    lambda owners: [key(f"k{i}", u, t) for i, (u, t) in enumerate(owners) if u or t]
)


@given(TEAMS, KEYS, st.sets(st.sampled_from(["u1", "u2", "u3"])))
def test_after_a_read_around_the_view_holds_exactly_the_fresh_teams_and_keys(
    teams: tuple[Team, ...], keys: list[Key], users: set[str]
) -> None:
    fresh_users = {u: User(u) for u in users}
    rows = rows_around(VIEW, fresh_users, teams, keys)
    out = overlay(VIEW, rows)
    assert out.teams == {t.team_id: t for t in teams}
    assert out.keys == {k.token: k for k in keys}
    assert {u: out.users[u] for u in users} == fresh_users
    assert unsettled_teams(VIEW, rows) == set()
    for uid in users:
        assert set(rows.user_teams[uid]) == {t.team_id for t in teams if uid in t.members}
