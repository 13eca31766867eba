"""``syncd sync --user/--group`` (issue 23): one subject's plan, applied now.

Against the real Keycloak and the emulator, as processes: the writes of
``sync --user X`` are exactly X's part of what a full reconcile would do (the
full dry run's operations for X, and the emulator's audit log counted), and the
full reconcile afterwards does the rest and nothing of X's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import Syncd, members, teams, users

pytestmark = pytest.mark.integration

GROUPS: dict[str, dict[str, str]] = {"/llm/red": {}, "/llm/blue": {}}
PEOPLE = [
    User("ann", "ann@example.com", groups=["/llm/red"]),
    User("ben", "ben@example.com", groups=["/llm/red", "/llm/blue"]),
    User("cat", "cat@example.com", groups=["/llm/blue"]),
]


def ops(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((op["op"], op["description"]) for op in plan["operations"])


def ops_of(plan: dict[str, Any], user_id: str) -> list[tuple[str, str]]:
    return sorted((op["op"], op["description"]) for op in plan["operations"]
                  if op.get("user_id") == user_id)


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    return realm_factory(groups=GROUPS, users=PEOPLE)


def test_sync_user_changes_exactly_that_users_part_of_a_full_reconcile(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    syncd = Syncd(realm, emulator, tmp_path)
    assert syncd.once().code == 0
    uid, gid = realm.user_ids(), realm.group_ids()
    emulator.generate_key(user_id=uid["ben"], team_id=gid["/llm/red"], key_alias="ben-red")
    realm.add_user_to_group("ann", "/llm/blue")  # joins
    realm.remove_user_from_group("ben", "/llm/red")  # leaves one team (irreversible)
    realm.disable_user("cat")  # departs: blocked
    dry = syncd.once("--dry-run")
    assert dry.code == 0, dry.stderr
    everything = ops(dry.json["plan"])
    for who in ("ann", "ben", "cat"):
        assert ops_of(dry.json["plan"], uid[who]), f"the set-up gives {who} nothing to do"
    emulator.clear_audit()

    ann = syncd.run("sync", "--user", "ann@example.com", "--json")  # by email
    assert ann.code == 0, ann.stderr
    assert ops(ann.json["plan"]) == ops_of(dry.json["plan"], uid["ann"])
    written = len(emulator.audit())
    assert written == ann.json["summary"]["ll_writes"] > 0
    assert ann.json["summary"]["kind"] == "scoped"
    assert uid["ann"] in members(teams(emulator)[gid["/llm/blue"]])
    assert uid["ben"] in members(teams(emulator)[gid["/llm/red"]])  # nobody else touched
    assert users(emulator)[uid["cat"]]["metadata"].get("scim_active") is not False

    ben = syncd.run("sync", "--user", "ben")  # by username, text output
    assert ben.code == 0, ben.stderr
    assert f"sync ben [{uid['ben']}]: scoped run over 1 user(s), 0 team(s)" in ben.stdout
    assert "remove member ben" in ben.stdout and "syncd success" in ben.stdout
    assert uid["ben"] not in members(teams(emulator)[gid["/llm/red"]])
    assert users(emulator)[uid["cat"]]["metadata"].get("scim_active") is not False

    rest = syncd.once()  # the full reconcile does cat's part and nothing of ann's or ben's
    assert rest.code == 0, rest.stderr
    assert ops(rest.json["plan"]) == ops_of(dry.json["plan"], uid["cat"])
    assert sorted([*ops(ann.json["plan"]), *ops(rest.json["plan"]),
                   *ops_of(dry.json["plan"], uid["ben"])]) == everything
    assert syncd.once("--check").code == 0


def test_sync_group_applies_that_teams_settings_only(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    syncd = Syncd(realm, emulator, tmp_path)
    assert syncd.once().code == 0
    gid = realm.group_ids()
    realm.set_group_attributes("/llm/red", {"litellm.max_budget": ["11"]})
    realm.set_group_attributes("/llm/blue", {"litellm.max_budget": ["22"]})
    emulator.clear_audit()
    red = syncd.run("sync", "--group", "/llm/red", "--json")
    assert red.code == 0, red.stderr
    assert [op["op"] for op in red.json["plan"]["operations"]] == ["update_team"]
    assert len(emulator.audit()) == 1
    assert teams(emulator)[gid["/llm/red"]]["max_budget"] == 11
    assert teams(emulator)[gid["/llm/blue"]].get("max_budget") != 22


def test_a_subject_that_names_nobody_is_one_line_and_exit_2_with_no_write(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    syncd = Syncd(realm, emulator, tmp_path)
    assert syncd.once().code == 0
    emulator.clear_audit()
    nobody = syncd.run("sync", "--user", "zed@example.com")
    assert nobody.code == 2
    assert "no Keycloak user (id, username or email) and no LiteLLM user id is " \
        "'zed@example.com'" in nobody.stderr
    assert syncd.run("sync", "--group", "/llm/nope").code == 2
    assert syncd.run("sync").code == 2  # neither --user nor --group
    assert emulator.audit() == []


def test_a_user_gone_from_keycloak_is_found_by_their_litellm_id_and_cut_off(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    syncd = Syncd(realm, emulator, tmp_path, users={"id_from": "email"})
    assert syncd.once().code == 0
    cat = realm.user_id("cat")
    realm.delete_user("cat")
    explained = syncd.run("explain", "cat@example.com", "--json")  # the LiteLLM user id
    assert explained.code == 0, explained.stderr
    doc = explained.json
    assert doc["subject"]["matched_by"] == "LiteLLM user id"
    assert doc["subject"]["keycloak_id"] == cat
    assert doc["desired"]["state"] == "departed: no such Keycloak user (deleted)"
    assert [op["op"] for op in doc["next_run"]["operations"]] == ["block_user"]
    emulator.clear_audit()
    done = syncd.run("sync", "--user", "cat@example.com", "--json")
    assert done.code == 0, done.stderr
    assert [op["op"] for op in done.json["plan"]["operations"]] == ["block_user"]
    assert users(emulator)["cat@example.com"]["metadata"]["scim_active"] is False
    assert len(emulator.audit()) == done.json["summary"]["ll_writes"]
    assert syncd.once("--check").code == 0
