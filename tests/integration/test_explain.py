"""``syncd explain`` (issue 23) against the real Keycloak and the emulator.

The stories an operator asks for at night: a member (which groups made which
teams and why, where each team setting comes from), a departed user within the
grace period (kill switch, keys blocked by syncd, the date keys are deleted),
a user held back by the brake, an identity collision, a group that is not
selected (and one nested in a team and ignored because flatten is off).
Explain writes nothing: the emulator's audit log stays empty.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import Syncd

pytestmark = pytest.mark.integration

GROUPS: dict[str, dict[str, str]] = {
    "/llm/red": {"litellm.max_budget": "5"},
    "/llm/blue": {},
    "/corp/ai": {"litellm.sync": "true"},
    "/corp/ai/ml": {},
    "/other": {},
}
PEOPLE = [
    User("ann", "ann@example.com", groups=["/llm/red", "/corp/ai/ml", "/other"]),
    User("ben", "ben@example.com", groups=["/llm/blue"]),
    User("eve", "eve@example.com", groups=["/llm/blue"]),
]


def group(doc: dict[str, Any], path: str) -> dict[str, Any]:
    found = [g for g in doc["keycloak"]["groups"] if g["path"] == path]
    assert found, (path, doc["keycloak"]["groups"])
    return found[0]


def test_explain_a_member_a_departed_user_a_collision_and_groups_without_writing(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm: KeycloakRealm = realm_factory(groups=GROUPS, users=PEOPLE)
    emulator.create_user("legacy-eve", user_email="eve@example.com")  # not syncd's
    syncd = Syncd(realm, emulator, tmp_path,
                  selection={"path_prefixes": ["/llm"], "attribute": "litellm.sync"},
                  teams={"defaults": {"rpm_limit": 10},
                         "overrides": {"/llm/red": {"tpm_limit": 100}}},
                  departures={"policy": "delete", "grace_days": 30},
                  users={"link_by_email": "false"})  # legacy-eve is not taken over
    assert syncd.once().code == 0  # eve's email is withheld; she has her teams (issue 24)
    uid, gid = realm.user_ids(), realm.group_ids()
    emulator.generate_key(user_id=uid["ben"], team_id=gid["/llm/blue"], key_alias="ben-key")
    realm.remove_user_from_group("ben", "/llm/blue")
    assert syncd.once().code == 0  # ben blocked
    emulator.clear_audit()

    ann = syncd.run("explain", "ann", "--json")
    assert ann.code == 0, ann.stderr
    doc = ann.json
    assert doc["subject"]["keycloak_id"] == uid["ann"]
    assert doc["keycloak"]["enabled"] is True
    assert sorted(doc["keycloak"]["direct_groups"]) == ["/corp/ai/ml", "/llm/red", "/other"]
    red = group(doc, "/llm/red")
    assert red["selected"] and red["why"] == "under selection.path_prefixes /llm"
    assert group(doc, "/corp/ai")["why"] == "group attribute litellm.sync is true " \
        "(selection.attribute)"
    ml = group(doc, "/corp/ai/ml")
    assert not ml["selected"] and "ignored because selection.flatten is false" in ml["why"]
    assert not group(doc, "/other")["selected"]
    assert [t["path"] for t in doc["desired"]["teams"]] == ["/llm/red"]
    settings = doc["desired"]["teams"][0]["settings"]
    assert settings["max_budget"] == {"value": 5.0, "from": "group attribute litellm.max_budget"}
    assert settings["tpm_limit"] == {"value": 100, "from": "teams.overrides[/llm/red]"}
    assert settings["rpm_limit"] == {"value": 10, "from": "teams.defaults"}
    assert doc["litellm"]["users"][0]["managed"] is True
    assert [m["team_id"] for m in doc["litellm"]["memberships"]] == [gid["/llm/red"]]
    assert doc["next_run"]["operations"] == []
    assert "nothing" in doc["next_run"]["summary"]

    text = syncd.run("explain", "ann@example.com")
    assert text.code == 0, text.stderr
    assert "[TEAM] /llm/red: under selection.path_prefixes /llm" in text.stdout
    assert "max_budget = 5.0 from group attribute litellm.max_budget" in text.stdout

    ben = syncd.run("explain", uid["ben"], "--json").json  # by Keycloak id
    assert ben["desired"]["state"] == "departed: in no selected group"
    row = ben["litellm"]["users"][0]
    assert row["scim_active"] is False and row["blocked_since"]
    assert [k["blocked_by"] for k in ben["litellm"]["keys"]] == ["syncd (syncd_blocked marker)"]
    on = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    assert any(f"keys deleted on {on} under departures.policy: delete" in d
               for d in ben["next_run"]["deadlines"]), ben["next_run"]["deadlines"]

    eve = syncd.run("explain", "eve", "--json").json
    assert any("legacy-eve" in w for w in eve["next_run"]["warnings"]), eve["next_run"]
    assert eve["desired"]["teams"][0]["path"] == "/llm/blue"

    other = syncd.run("explain", "--group", "/other", "--json")
    assert other.code == 0, other.stderr
    assert other.json["desired"]["team"] is None
    assert "not under selection.path_prefixes" in group(other.json, "/other")["why"]
    blue = syncd.run("explain", "--group", "/llm/blue")
    assert "Desired in LiteLLM: team alias blue, 1 member(s)" in blue.stdout, blue.stdout

    assert syncd.run("explain", "nobody").code == 2
    assert emulator.audit() == []  # explain wrote nothing


def test_explain_a_user_held_back_by_the_brake(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups={"/llm/red": {}}, users=[
        User(name, f"{name}@example.com", groups=["/llm/red"]) for name in ("ann", "ben", "cat")
    ])
    syncd = Syncd(realm, emulator, tmp_path, safety={"max_blocked": 1})
    assert syncd.once().code == 0
    realm.disable_user("ann")
    realm.disable_user("ben")
    emulator.clear_audit()
    doc = syncd.run("explain", "ann", "--json").json
    nxt = doc["next_run"]
    assert doc["desired"]["state"] == "departed: disabled in Keycloak"
    assert [op["op"] for op in nxt["held_back"]] == ["block_user"]
    assert "safety brake is engaged" in nxt["brake"] and "max_blocked" in nxt["brake"]
    text = syncd.run("explain", "ann").stdout
    assert "held back: block user ann" in text, text
    assert emulator.audit() == []
