"""Plan rendering: grouped by team, readable, and free of key material."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from syncd.evidence import UserOutside
from syncd.model import (
    MANAGED,
    Actual,
    Desired,
    DesiredTeam,
    DesiredUser,
    Key,
    Team,
    TeamSettings,
    User,
)
from syncd.operations import DeleteKey
from syncd.plan import Plan, Skipped, make_plan
from syncd.report import Names, plan_json, render_plan
from tests.unit.policies import policy_at

NOW = datetime(2026, 11, 1, tzinfo=UTC)
TOKEN = "a" * 60 + "beef"


def scenario() -> tuple[Desired, Actual]:
    desired = Desired(
        teams={"t1": DesiredTeam("t1", "research", "/llm/research",
                                 TeamSettings(max_budget=50.0), {"u1": "user", "u3": "user"})},
        users={"u1": DesiredUser("u1", "alice", "alice@x"), "u3": DesiredUser("u3", "carol", None)},
    )
    actual = Actual(
        teams={"t1": Team("t1", "old-name", TeamSettings(max_budget=10.0),
                          {"u1": "user", "u2": "user"}, {MANAGED: True})},
        users={"u1": User("u1", "alice@x", metadata={MANAGED: True}),
               "u2": User("u2", "bob@x", metadata={MANAGED: True})},
        keys={TOKEN: Key(TOKEN, "u2", "t1", key_name="sk-...beef"),
              "b" * 64: Key("b" * 64, "u2", None, alias="bob-laptop")},
    )
    return desired, actual


def test_text_plan_is_grouped_and_names_people() -> None:
    desired, actual = scenario()
    plan = make_plan(desired, actual, policy_at(NOW, brake_released=True))
    text = render_plan(plan, Names.from_states(desired, actual))
    lines = text.splitlines()
    assert lines[0].startswith("Plan: ")
    assert "Team research (/llm/research) [t1]" in lines
    assert any(ln.startswith('  ~ update team: team_alias: "old-name" -> "research"; '
                             "max_budget: 10.0 -> 50.0; metadata: ") for ln in lines)
    assert "  + add member carol as user" in lines
    # a departure is reversible: memberships and keys stay, keys are blocked
    assert not any("remove member" in ln for ln in lines)
    assert any("block user bob@x: scim_active false" in ln for ln in lines)
    assert any("block key ...beef of bob@x, team research (/llm/research)" in ln for ln in lines)
    assert any("block key bob-laptop of bob@x, personal key" in ln for ln in lines)
    assert TOKEN not in text and "b" * 64 not in text


def test_json_plan_has_no_key_material_and_shows_held_back() -> None:
    desired, actual = scenario()
    plan = make_plan(desired, actual, policy_at(NOW, max_blocked=0))
    doc = plan_json(plan, Names.from_states(desired, actual))
    dumped = json.dumps(doc)
    assert TOKEN not in dumped and "b" * 64 not in dumped
    assert doc["brake_reason"] and doc["held_back"]
    assert all(not op["destructive"] for op in doc["operations"])
    text = render_plan(plan, Names.from_states(desired, actual))
    assert "Held back by the safety brake" in text and "--force" in text


def test_no_changes_message() -> None:
    empty = Desired({}, {})
    plan = make_plan(empty, Actual({}, {}, {}), policy_at(NOW))
    assert render_plan(plan, Names()) == "No changes: LiteLLM matches Keycloak."


def test_deleted_keys_are_grouped_by_cause_not_by_the_wording_of_reason() -> None:
    evidence = UserOutside("u1", "u1")
    left = DeleteKey("k1", "u1", "t1", "left-key", "left_group", "departed wording", evidence)
    gone = DeleteKey("k2", "u1", "t1", "gone-key", "departed_grace_over", "left", evidence)
    text = render_plan(Plan((left, gone)), Names(teams={"t1": "research"}))
    team, users = text.split("Users")
    assert "left-key" in team and "gone-key" in users


def test_a_plan_with_only_warnings_or_left_out_steps_says_so() -> None:
    empty = Desired({}, {})
    plan = make_plan(empty, Actual({}, {}, {}), policy_at(NOW))
    warned = replace(plan, warnings=("team admins synced as user",))
    assert render_plan(warned, Names()).startswith(
        "No changes: LiteLLM matches Keycloak. Warnings below.")
    skipped = replace(plan, skipped=(Skipped("t1", "not syncd's"),))
    assert render_plan(skipped, Names()).startswith("No changes to apply; see below")
