"""The kept view of LiteLLM: fresh rows win, and disagreements are named."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncd.model import MANAGED, Actual, Key, Team, TeamSettings, User
from syncd.view import Rows, differences, overlay, subjects_of, unsettled_teams


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
