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
from tests.integration.harness import Syncd, answers, members, teams, users

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


def _allow_duplicate_emails(realm: KeycloakRealm) -> None:
    """Keycloak refuses a second user with one email unless the realm allows it."""
    base = f"/admin/realms/{realm.name}"
    rep = realm.admin.get(base)
    rep["duplicateEmailsAllowed"] = True
    realm.admin.request("PUT", base, json_body=rep)


def _team_key_works(emulator: EmulatorAdmin, user_id: str, team_id: str) -> bool:
    """A key minted for the user on the team answers an LLM call."""
    key = str(emulator.generate_key(user_id=user_id, team_id=team_id)["key"])
    return answers(emulator, key) == 200


def _no_op(syncd: Syncd, emulator: EmulatorAdmin) -> Any:
    emulator.clear_audit()
    again = syncd.once()
    assert again.code == ExitCode.OK, again.stdout + again.stderr
    plan = again.json["plan"]  # shown even when it holds only warnings
    assert plan["operations"] == [] and plan["held_back"] == []  # no operation at all
    assert emulator.audit() == []
    return again


def test_both_holders_of_a_shared_email_reach_their_teams(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    """Issue 24: `alice` and `alice-admin` (or a shared mailbox) with one email used
    to leave both without a LiteLLM user, exit 9 on every run."""
    realm = realm_factory(groups=GROUPS, users=[
        User("erin", "shared@example.com", groups=["/llm/research"]),
        User("gina", "gina@example.com", groups=["/llm/research"]),
    ])
    _allow_duplicate_emails(realm)
    realm.create_user("frank", email="shared@example.com", groups=["/llm/research"])
    syncd = Syncd(realm, emulator, tmp_path)
    result = syncd.once()
    assert result.code == ExitCode.OK, result.stdout + result.stderr
    warnings = result.json["warnings"]
    for me, other in (("erin", "frank"), ("frank", "erin")):
        mine = [w for w in warnings if w.startswith(f"Keycloak user {me} ")]
        assert len(mine) == 1 and other in mine[0] and realm.user_id(other) in mine[0]
    research = realm.group_id("/llm/research")
    got = users(emulator)
    for name in ("erin", "frank", "gina"):
        uid = realm.user_id(name)
        assert uid in members(teams(emulator)[research]), name
        assert _team_key_works(emulator, uid, research), name
    # the stable rule: a shared address is given to neither of them
    assert not got[realm.user_id("erin")].get("user_email")
    assert not got[realm.user_id("frank")].get("user_email")
    assert got[realm.user_id("gina")]["user_email"] == "gina@example.com"
    assert all(w["status"] < 400 for w in emulator.audit())
    again = _no_op(syncd, emulator)
    assert len(again.json["warnings"]) == 2  # still named, every run, never retried


def test_a_new_hire_with_a_reused_address_gets_access_and_the_leaver_stays_blocked(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    """Issue 24: a departed user (blocked, kept for the grace period) held the
    address, so the new hire never got a LiteLLM user."""
    realm = realm_factory(groups=GROUPS, users=[
        User("hank", "team-lead@example.com", groups=["/llm/research"])])
    syncd = Syncd(realm, emulator, tmp_path)
    assert syncd.once().code == 0
    research = realm.group_id("/llm/research")
    old = realm.user_id("hank")
    keys = [str(emulator.generate_key(user_id=old, key_alias="hank-key")["key"]),
            str(emulator.generate_key(user_id=old, team_id=research)["key"])]
    realm.delete_user("hank")
    assert syncd.once().code == 0
    assert not any(emulator.auth_check(k)["allowed"] for k in keys)

    realm.create_user("ivy", email="Team-Lead@example.com", groups=["/llm/research"])
    ivy = realm.user_id("ivy")
    dry = syncd.once("--dry-run")
    assert [(op["user_id"], op["to_user_id"]) for op in ops(dry, "release_email")] == [(old, ivy)]
    assert [op["email"] for op in ops(dry, "create_user")] == [None]  # access first
    result = syncd.once()
    assert result.code == ExitCode.OK, result.stdout + result.stderr
    got = users(emulator)
    assert got[ivy]["user_email"] == "team-lead@example.com"  # as Keycloak spells it
    assert ivy in members(teams(emulator)[research])
    assert _team_key_works(emulator, ivy, research)
    leaver = got[old]
    assert not leaver["user_email"]
    assert leaver["metadata"]["syncd_released_email"] == "team-lead@example.com"
    assert leaver["metadata"]["scim_active"] is False
    assert leaver["metadata"].get("syncd_keycloak_id") in (None, old)  # never ivy's
    assert not any(emulator.auth_check(k)["allowed"] for k in keys)  # still blocked
    _no_op(syncd, emulator)
    assert not any(emulator.auth_check(k)["allowed"] for k in keys)


def test_sso_users_are_linked_by_verified_email_with_the_defaults(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    """Issue 24: with the defaults an SSO login's user (user_id = email) was not
    linked, the Keycloak user not created (its email taken): no team, exit 9."""
    realm = realm_factory(groups=GROUPS, users=[
        User("alice", "alice@example.com", groups=["/llm/research"]),
        User("bob", "bob@example.com", groups=["/llm/research"]),
    ])
    _update_kc_user(realm, "bob", emailVerified=False)
    alice_key = seed_sso_user(emulator, "alice@example.com", "alice@example.com")
    emulator.create_user("bob@example.com", user_email="bob@example.com",
                         user_role="internal_user", metadata={"auth_provider": "generic"})
    bob_key = str(emulator.generate_key(user_id="bob@example.com", key_alias="bob-laptop")["key"])
    emulator.clear_audit()
    syncd = Syncd(realm, emulator, tmp_path)
    result = syncd.once()
    assert result.code == ExitCode.OK, result.stdout + result.stderr
    research = realm.group_id("/llm/research")
    got = users(emulator)
    alice = got["alice@example.com"]
    assert alice["metadata"]["syncd_keycloak_id"] == realm.user_id("alice")
    assert alice["metadata"]["auth_provider"] == "generic"
    assert realm.user_id("alice") not in got  # linked, no second user
    assert emulator.auth_check(alice_key)["allowed"]  # the personal key keeps working
    assert answers(emulator, alice_key) == 200
    # bob's address is not verified: his SSO user is not taken over, he is named,
    # and he still gets his team, as a new user without that address
    bob = realm.user_id("bob")
    assert "syncd_managed" not in got["bob@example.com"]["metadata"]
    assert emulator.auth_check(bob_key)["allowed"]  # not ours: untouched
    assert not got[bob]["user_email"]
    warned = [w for w in result.json["warnings"] if "bob@example.com" in w]
    assert len(warned) == 1 and "bob" in warned[0] and "verified" in warned[0]
    assert set(members(teams(emulator)[research])) == {"alice@example.com", bob}
    assert _team_key_works(emulator, bob, research)
    _no_op(syncd, emulator)


def test_an_alias_clash_with_a_hand_made_team_is_named(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    """Issue 24: a hand-made team "research" beside the group's team, without a word."""
    realm = realm_factory(groups=GROUPS, users=[
        User("lena", "lena@example.com", groups=["/llm/research"])])
    emulator.create_team("hand-research", "research", metadata={"owner": "ops"})
    emulator.clear_audit()
    before = teams(emulator)["hand-research"]
    syncd = Syncd(realm, emulator, tmp_path)
    result = syncd.once()
    assert result.code == ExitCode.OK, result.stdout + result.stderr
    named = [w for w in result.json["warnings"] if "hand-research" in w]
    assert len(named) == 1 and "rename" in named[0] and "adopt_existing" in named[0]
    assert teams(emulator)["hand-research"] == before  # never touched
    again = _no_op(syncd, emulator)
    assert [w for w in again.json["warnings"] if "hand-research" in w] == named
