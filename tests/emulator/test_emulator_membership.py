"""Membership lives in three places; they must stay in step through every operation."""

from __future__ import annotations

from typing import Any

import httpx

from devtools.litellm_emulator.admin import EmulatorAdmin


def _places(
    state: dict[str, Any],
) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[tuple[str, str]]]:
    roster = {(m["user_id"], t["team_id"]) for t in state["teams"] for m in t["members_with_roles"]}
    user_teams = {(u["user_id"], tid) for u in state["users"] for tid in u["teams"]}
    rows = {(m["user_id"], m["team_id"]) for m in state["memberships"]}
    return roster, user_teams, rows


def _assert_in_step(emulator: EmulatorAdmin) -> set[tuple[str, str]]:
    state = emulator.state()
    roster, user_teams, rows = _places(state)
    assert roster == user_teams == rows
    assert state["consistency_problems"] == []
    return roster


def test_three_places_stay_in_step(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.settings(auto_add_proxy_admin=False)
    api.post(
        "/team/new",
        json={"team_id": "t1", "members_with_roles": [{"user_id": "a", "role": "user"}]},
    )
    api.post("/team/new", json={"team_id": "t2"})
    assert _assert_in_step(emulator) == {("a", "t1")}

    api.post(
        "/team/member_add",
        json={
            "team_id": "t2",
            "member": [{"user_id": "a", "role": "user"}, {"user_id": "b", "role": "user"}],
        },
    )
    api.post("/team/member_add", json={"team_id": "t1", "member": {"user_id": "c", "role": "user"}})
    assert _assert_in_step(emulator) == {("a", "t1"), ("a", "t2"), ("b", "t2"), ("c", "t1")}

    api.post("/team/member_delete", json={"team_id": "t2", "user_id": "a"})
    assert _assert_in_step(emulator) == {("a", "t1"), ("b", "t2"), ("c", "t1")}

    api.post("/user/delete", json={"user_ids": ["c"]})
    assert _assert_in_step(emulator) == {("a", "t1"), ("b", "t2")}

    api.post("/team/delete", json={"team_ids": ["t1"]})
    assert _assert_in_step(emulator) == {("b", "t2")}
    users = {u["user_id"]: u["teams"] for u in emulator.state()["users"]}
    assert users == {"a": [], "b": ["t2"]}


def test_consistency_checker_reports_stray_state(
    api: httpx.Client, emulator: EmulatorAdmin, litellm_emulator: Any
) -> None:
    """The checker itself works: break the tables in-process and it notices."""
    api.post(
        "/team/new",
        json={"team_id": "t1", "members_with_roles": [{"user_id": "a", "role": "user"}]},
    )
    state = litellm_emulator.app.state.emulator.state
    with state.lock:
        state.users["a"].teams.clear()
    problems = emulator.state()["consistency_problems"]
    assert problems == ["team t1: a rostered but not in user.teams"]


def test_member_delete_also_clears_a_stale_user_teams_entry(
    api: httpx.Client, emulator: EmulatorAdmin, litellm_emulator: Any
) -> None:
    """A user row can outlive its roster entry; member_delete still clears it (real behaviour)."""
    api.post(
        "/team/new",
        json={"team_id": "t1", "members_with_roles": [{"user_id": "a", "role": "user"}]},
    )
    state = litellm_emulator.app.state.emulator.state
    with state.lock:
        state.teams["t1"].members_with_roles = [
            m for m in state.teams["t1"].members_with_roles if m["user_id"] != "a"
        ]
    response = api.post("/team/member_delete", json={"team_id": "t1", "user_id": "a"})
    assert response.status_code == 200
    _assert_in_step(emulator)
