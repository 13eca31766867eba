"""Identity end to end (issue 11): linking the LiteLLM users that already exist,
following renames, and collisions that are reported instead of retried, against
a real Keycloak and the emulator over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from syncd.errors import ExitCode
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import Syncd, members, teams, users

GROUPS: dict[str, dict[str, Any]] = {"/llm/research": {}}


def ops(result: Any, kind: str) -> list[dict[str, Any]]:
    return [op for op in result.json["plan"]["operations"] if op["op"] == kind]


def seed_sso_user(emulator: EmulatorAdmin, user_id: str, email: str) -> str:
    """What LiteLLM's SSO login leaves behind (ui_sso.py::insert_sso_user): a user
    with an `auth_provider` metadata key; plus a personal key and a hand-made team."""
    emulator.create_user(user_id, user_email=email, user_alias="Alice Smith",
                         user_role="internal_user", metadata={"auth_provider": "generic"})
    key = str(emulator.generate_key(user_id=user_id, key_alias="alice-laptop")["key"])
    emulator.create_team("hand-made", "hand-made")
    emulator.add_member("hand-made", user_id)
    emulator.clear_audit()
    return key


def test_sso_user_with_email_as_id_is_linked_on_the_first_run(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups=GROUPS, users=[
        User("alice", "alice@example.com", groups=["/llm/research"]),
        User("bob", "bob@example.com", groups=["/llm/research"]),
    ])
    key = seed_sso_user(emulator, "alice@example.com", "alice@example.com")
    syncd = Syncd(realm, emulator, tmp_path, users={"id_from": "email"})

    dry = syncd.once("--dry-run")
    assert dry.code == 0, dry.stderr
    links = ops(dry, "link_user")
    assert [(op["user_id"], op["username"], op["how"]) for op in links] == [
        ("alice@example.com", "alice", "id")]
    assert "link existing LiteLLM user alice@example.com" in links[0]["description"]
    assert [op["user_id"] for op in ops(dry, "create_user")] == ["bob@example.com"]
    assert emulator.audit() == []

    first = syncd.once()
    assert first.code == 0, first.stderr
    alice = users(emulator)["alice@example.com"]
    assert alice["metadata"]["auth_provider"] == "generic"  # other keys kept
    assert alice["metadata"]["syncd_managed"] is True
    assert alice["metadata"]["syncd_keycloak_id"] == realm.user_id("alice")
    assert alice["metadata"]["syncd_id_from"] == "email"
    assert alice["user_alias"] == "alice"  # follows the Keycloak username
    assert realm.user_id("alice") not in users(emulator)  # no second user
    assert emulator.auth_check(key)["allowed"]  # the personal key keeps working
    assert "alice@example.com" in members(teams(emulator)["hand-made"])  # unmanaged team kept
    research = teams(emulator)[realm.group_id("/llm/research")]
    assert set(members(research)) == {"alice@example.com", "bob@example.com"}

    emulator.clear_audit()
    second = syncd.once()
    assert second.code == 0, second.stderr
    assert emulator.audit() == []


@pytest.mark.parametrize("rule", ["id", "username", "email"])
def test_each_user_id_rule(
    rule: str, realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups=GROUPS, users=[
        User("carol", "carol@example.com", groups=["/llm/research"])])
    syncd = Syncd(realm, emulator, tmp_path, users={"id_from": rule})
    assert syncd.once().code == 0
    expected = {"id": realm.user_id("carol"), "username": "carol",
                "email": "carol@example.com"}[rule]
    assert expected in users(emulator)
    assert expected in members(teams(emulator)[realm.group_id("/llm/research")])
    if rule != "id":
        # A changed rule is refused, not a second user for everyone.
        syncd.config["users"] = {"id_from": "id"}
        refused = syncd.once()
        assert refused.code == ExitCode.CONFIG, refused.stdout
        assert "users.id_from" in refused.stdout + refused.stderr


def _update_kc_user(realm: KeycloakRealm, who: str, **fields: Any) -> None:
    admin = realm.admin
    base = f"/admin/realms/{realm.name}"
    rep = admin.get(f"{base}")
    if not rep.get("editUsernameAllowed"):
        rep["editUsernameAllowed"] = True
        admin.request("PUT", base, json_body=rep)
    uid = realm.user_id(who)
    user = admin.get(f"{base}/users/{uid}")
    user.update(fields)
    admin.request("PUT", f"{base}/users/{uid}", json_body=user)


def test_email_and_username_changes_are_followed(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups=GROUPS, users=[
        User("dave", "dave@example.com", groups=["/llm/research"])])
    syncd = Syncd(realm, emulator, tmp_path)
    assert syncd.once().code == 0
    uid = realm.user_id("dave")
    _update_kc_user(realm, "dave", username="david", email="david@example.com")
    emulator.clear_audit()
    result = syncd.once()
    assert result.code == 0, result.stderr
    row = users(emulator)[uid]
    assert (row["user_email"], row["user_alias"]) == ("david@example.com", "david")
    assert len(users(emulator)) == len({uid} | {u for u in users(emulator) if u != uid})
    assert [w["path"] for w in emulator.audit()] == ["/user/update"]


def test_two_keycloak_users_with_one_email_are_reported_and_nobody_blocked(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups=GROUPS, users=[
        User("erin", "shared@example.com", groups=["/llm/research"]),
        User("gina", "gina@example.com", groups=["/llm/research"]),
    ])
    # Keycloak refuses a second user with one email unless the realm allows it.
    base = f"/admin/realms/{realm.name}"
    rep = realm.admin.get(base)
    rep["duplicateEmailsAllowed"] = True
    realm.admin.request("PUT", base, json_body=rep)
    realm.create_user("frank", email="shared@example.com", groups=["/llm/research"])
    syncd = Syncd(realm, emulator, tmp_path)
    result = syncd.once()
    assert result.code == ExitCode.WARNINGS, result.stderr
    warnings = result.json["warnings"]
    for name in ("erin", "frank"):
        assert any(name in w and ("frank" if name == "erin" else "erin") in w for w in warnings)
    got = users(emulator)
    assert realm.user_id("gina") in got  # the rest is synced
    assert realm.user_id("erin") not in got and realm.user_id("frank") not in got
    assert not [w for w in emulator.audit() if w["path"] in ("/user/update", "/key/block")
                and "scim_active" in str(w)]
    again = syncd.once()
    assert again.code == ExitCode.WARNINGS  # reported each run, never a retry storm
    assert all(w["status"] < 400 for w in emulator.audit())


def test_email_reused_by_a_new_hire_does_not_take_over_the_old_users_keys(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups=GROUPS, users=[
        User("hank", "team-lead@example.com", groups=["/llm/research"])])
    syncd = Syncd(realm, emulator, tmp_path, users={"link_by_email": True})
    assert syncd.once().code == 0
    old = realm.user_id("hank")
    key = str(emulator.generate_key(user_id=old, key_alias="hank-key")["key"])
    realm.delete_user("hank")
    assert syncd.once().code == 0
    assert users(emulator)[old]["metadata"]["scim_active"] is False
    assert not emulator.auth_check(key)["allowed"]

    realm.create_user("ivy", email="team-lead@example.com", groups=["/llm/research"])
    result = syncd.once()
    assert result.code == ExitCode.WARNINGS, result.stderr
    assert any("ivy" in w and old in w for w in result.json["warnings"])
    assert users(emulator)[old]["metadata"]["scim_active"] is False  # still blocked
    assert users(emulator)[old]["metadata"].get("syncd_keycloak_id") in (None, old)
    assert not emulator.auth_check(key)["allowed"]
    assert realm.user_id("ivy") not in users(emulator)
