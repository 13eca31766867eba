"""syncd end to end: a real Keycloak process, the emulator over HTTP, the real CLI."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import SERVICE_USER, Syncd, members, teams, users

BIG = 155
GROUPS = {
    "/llm/research": {"litellm.max_budget": "50"},
    "/llm/research/vision": {},
    "/llm/platform": {"litellm.tpm_limit": "1000"},
    "/llm/big": {},
    "/other": {},
}
PEOPLE = [
    User("alice", "alice@example.com", groups=["/llm/research", "/llm/platform"]),
    User("bob", "bob@example.com", groups=["/llm/research"]),
    User("carol", "carol@example.com", groups=["/llm/platform", "/other"]),
    User("dave", "dave@example.com", enabled=False, groups=["/llm/research"]),
    User("erin", "erin@example.com", groups=["/other"]),
    *[User(f"u{i:03}", f"u{i:03}@example.com", groups=["/llm/big"]) for i in range(BIG)],
]


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    return realm_factory(groups=GROUPS, users=PEOPLE)


@pytest.fixture
def syncd(realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path) -> Syncd:
    return Syncd(realm, emulator, tmp_path, keycloak={"page_size": 50})


def test_first_sync_creates_everything_and_second_writes_nothing(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    dry = syncd.once("--dry-run")
    assert dry.code == 0, dry.stderr
    assert len(dry.json["plan"]["operations"]) > BIG
    assert emulator.audit() == []  # a dry run writes nothing

    first = syncd.once()
    assert first.code == 0, first.stderr
    got = teams(emulator)
    ids = realm.group_ids()
    assert set(got) == {ids[p] for p in ("/llm", "/llm/research", "/llm/research/vision",
                                         "/llm/platform", "/llm/big")}
    research = got[ids["/llm/research"]]
    assert research["team_alias"] == "research"
    assert research["max_budget"] == 50.0
    assert research["metadata"]["syncd_managed"] is True
    assert research["metadata"]["syncd_group_path"] == "/llm/research"
    assert got[ids["/llm/platform"]]["tpm_limit"] == 1000
    uid = realm.user_ids()
    assert members(research) == {uid["alice"]: "user", uid["bob"]: "user"}  # dave is disabled
    assert len(members(got[ids["/llm/big"]])) == BIG  # paged through 50 at a time
    people = users(emulator)
    assert people[uid["alice"]]["user_email"] == "alice@example.com"
    assert people[uid["alice"]]["metadata"]["syncd_managed"] is True
    assert uid["dave"] not in people and uid["erin"] not in people
    assert realm.service_account_user_id() not in people
    keys = [k for k in emulator.state()["keys"] if k["user_id"] != SERVICE_USER]
    assert keys == []  # auto_create_key: false (syncd's own key aside)
    audit = emulator.audit()
    assert audit and all(w["changed_by"] == "syncd" for w in audit)

    second = syncd.once()
    assert second.code == 0, second.stderr
    assert second.json["summary"]["ll_writes"] == 0
    assert len(emulator.audit()) == len(audit)
    check = syncd.run("--check")
    assert check.code == 0, check.stdout


def test_keycloak_changes_reach_litellm(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    assert syncd.once().code == 0
    ids, uid = realm.group_ids(), realm.user_ids()
    realm.rename_group("/llm/research", "science")
    realm.remove_user_from_group("bob", "/llm/science")
    realm.create_group("/llm/platform/sre")
    realm.add_user_to_group("carol", "/llm/platform/sre")
    check = syncd.run("--check")
    assert check.code == 1  # drift
    result = syncd.once()
    assert result.code == 0, result.stdout + result.stderr
    got = teams(emulator)
    science = got[ids["/llm/research"]]  # same team, new alias
    assert science["team_alias"] == "science"
    assert science["metadata"]["syncd_group_path"] == "/llm/science"
    # bob is in no selected group now: departed, cut off, but his membership stays
    assert members(science) == {uid["alice"]: "user", uid["bob"]: "user"}
    sre = got[realm.group_id("/llm/platform/sre")]
    assert sre["team_alias"] == "sre" and members(sre) == {uid["carol"]: "user"}
    assert sum(1 for t in got.values() if t["team_alias"] in ("research", "science")) == 1
    # bob is in no managed group any more: departed, kill switch on
    assert users(emulator)[uid["bob"]]["metadata"]["scim_active"] is False
    assert syncd.once().json["summary"]["ll_writes"] == 0


@pytest.mark.parametrize("failure", ["wrong secret", "missing role", "keycloak down"])
def test_keycloak_read_failure_writes_nothing(
    failure: str, syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    env = {}
    if failure == "wrong secret":
        env["SYNCD_KEYCLOAK__CLIENT_SECRET"] = "not-the-secret"
    elif failure == "missing role":
        realm.remove_service_account_role("view-users")
    else:
        syncd.config["keycloak"]["url"] = "http://127.0.0.1:9"  # discard port: refused
    result = syncd.once(env=env)
    assert result.code == 4, result.stdout + result.stderr
    assert emulator.audit() == []
    error = result.json["error"]
    expected = {"wrong secret": "authentication refused", "missing role": "view-users",
                "keycloak down": "cannot connect"}[failure]
    assert expected in error
    assert "not-the-secret" not in result.stdout + result.stderr


def test_empty_selection_while_teams_are_managed_is_a_failure(
    syncd: Syncd, emulator: EmulatorAdmin
) -> None:
    assert syncd.once().code == 0
    before = len(emulator.audit())
    syncd.config["selection"] = {"path_prefixes": ["/nothing-here"], "attribute": None}
    result = syncd.once()
    assert result.code == 4
    assert "refusing to treat that as everyone leaving" in result.json["error"]
    assert len(emulator.audit()) == before


def test_unmanaged_team_is_left_alone_unless_adopted(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    gid = realm.group_id("/llm/platform")
    emulator.create_team(team_id=gid, team_alias="hand-made", metadata={"owner": "ops"})
    result = syncd.once()
    assert result.code == 0
    assert teams(emulator)[gid]["team_alias"] == "hand-made"
    assert any(s["team_id"] == gid for s in result.json["plan"]["skipped"])
    syncd.config["teams"] = {"adopt_existing": True}
    assert syncd.once().code == 0
    team = teams(emulator)[gid]
    assert team["team_alias"] == "platform" and team["metadata"]["owner"] == "ops"
    assert team["metadata"]["syncd_managed"] is True


def test_admin_subgroup_without_licence_syncs_as_user(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups=["/llm/t", "/llm/t/admins"],
                          users=[User("boss", groups=["/llm/t/admins"]),
                                 User("dev", groups=["/llm/t"])])
    syncd = Syncd(realm, emulator, tmp_path, members={"admin_subgroup": "admins"})
    result = syncd.once()
    assert result.code == 0
    assert any("enterprise licence" in w for w in result.json["warnings"])
    team = teams(emulator)[realm.group_id("/llm/t")]
    assert members(team) == {realm.user_id("boss"): "user", realm.user_id("dev"): "user"}
    assert realm.group_id("/llm/t/admins") not in teams(emulator)
    # licensed proxy: the admin role is granted
    emulator.settings(licensed=True)
    syncd.config["litellm"]["enterprise_license"] = True
    assert syncd.once().code == 0
    assert members(teams(emulator)[realm.group_id("/llm/t")])[realm.user_id("boss")] == "admin"


# --- departures (issue 4) ------------------------------------------------------------


def test_departed_user_loses_access_and_gets_it_back(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    assert syncd.once().code == 0
    uid, ids = realm.user_ids(), realm.group_ids()
    alice = uid["alice"]
    team_key = emulator.generate_key(user_id=alice, team_id=ids["/llm/research"])["key"]
    personal = emulator.generate_key(user_id=alice, key_alias="alice-laptop")["key"]
    by_admin = emulator.generate_key(user_id=alice)["key"]
    with emulator.client(headers={"litellm-changed-by": "admin"}) as c:
        c.post("/key/block", json={"key": by_admin}).raise_for_status()
    assert emulator.auth_check(personal)["allowed"] and emulator.auth_check(team_key)["allowed"]

    realm.disable_user("alice")
    plan = syncd.once("--dry-run").json["plan"]
    described = " | ".join(op["description"] for op in plan["operations"])
    assert "block key alice-laptop" in described and "block user alice" in described
    assert personal not in str(plan) and team_key not in str(plan)
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert not emulator.auth_check(personal)["allowed"]
    assert not emulator.auth_check(team_key)["allowed"]
    state = users(emulator)[alice]
    assert state["metadata"]["scim_active"] is False and "syncd_blocked_at" in state["metadata"]
    assert alice in members(teams(emulator)[ids["/llm/research"]])  # reversible: kept
    assert syncd.once().json["summary"]["ll_writes"] == 0

    realm.enable_user("alice")
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert emulator.auth_check(personal)["allowed"]
    assert emulator.auth_check(team_key)["allowed"]  # the team key is back too
    assert not emulator.auth_check(by_admin)["allowed"]  # blocked by hand: stays blocked
    assert users(emulator)[alice]["metadata"]["scim_active"] is True
    assert alice in members(teams(emulator)[ids["/llm/research"]])


def test_leaving_one_team_revokes_only_that_teams_keys(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    emulator.settings(delete_keys_on_member_delete=False)  # older LiteLLM keeps them
    assert syncd.once().code == 0
    uid, ids = realm.user_ids(), realm.group_ids()
    research_key = emulator.generate_key(user_id=uid["alice"], team_id=ids["/llm/research"])
    platform_key = emulator.generate_key(user_id=uid["alice"], team_id=ids["/llm/platform"])
    realm.remove_user_from_group("alice", "/llm/research")
    result = syncd.once()
    assert result.code == 0
    assert not emulator.auth_check(research_key["key"])["allowed"]
    assert emulator.auth_check(platform_key["key"])["allowed"]
    assert syncd.once().json["summary"]["ll_writes"] == 0


def test_deleted_group_blocks_its_team(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    assert syncd.once().code == 0
    gid = realm.group_id("/llm/platform")
    service_key = emulator.generate_key(team_id=gid)["key"]  # a team key without a user
    before = members(teams(emulator)[gid])
    realm.delete_group("/llm/platform")
    result = syncd.once()
    assert result.code == 0, result.stdout
    team = teams(emulator)[gid]
    assert team["blocked"] is True and "syncd_archived_at" in team["metadata"]
    assert members(team) == before  # archived: members and keys stay until the grace period
    assert not emulator.auth_check(service_key)["allowed"]
    uid = realm.user_ids()
    assert users(emulator)[uid["carol"]]["metadata"]["scim_active"] is False  # no group left
    assert users(emulator)[uid["alice"]]["metadata"].get("scim_active") is not False


def test_brake_at_and_over_threshold(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    syncd.config["safety"] = {"max_blocked": 3, "max_blocked_fraction": 1.0}
    assert syncd.once().code == 0
    uid = realm.user_ids()
    for name in ("u000", "u001", "u002", "u003"):  # 4 people cut off: over 3
        emulator.generate_key(user_id=uid[name])  # keys do not count, people do
        realm.remove_user_from_group(name, "/llm/big")
    realm.add_user_to_group("erin", "/llm/research")  # and one addition
    result = syncd.once()
    assert result.code == 7, result.stdout
    assert len(result.json["plan"]["held_back"]) == 8  # 4 kill switches, 4 key blocks
    research = members(teams(emulator)[realm.group_id("/llm/research")])
    assert uid["erin"] in research  # the non-destructive part was applied

    def cut_off() -> int:
        return sum(1 for u in users(emulator).values()
                   if u["metadata"].get("scim_active") is False)

    assert cut_off() == 0  # nobody cut off
    realm.add_user_to_group("u003", "/llm/big")  # back to 3 people: at the limit
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert cut_off() == 3


def test_brake_released_with_force(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    syncd.config["safety"] = {"max_blocked": 1}
    assert syncd.once().code == 0
    uid = realm.user_ids()
    for name in ("u010", "u011"):
        realm.remove_user_from_group(name, "/llm/big")
    assert syncd.once().code == 7
    assert syncd.once("--force").code == 0
    state = users(emulator)
    assert all(state[uid[n]]["metadata"]["scim_active"] is False for n in ("u010", "u011"))


def test_killed_mid_departure_next_run_converges(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    syncd.config["safety"] = {"max_blocked": 1000, "max_blocked_fraction": 1.0}
    syncd.config["litellm"]["concurrency"] = 2
    assert syncd.once().code == 0
    uid = realm.user_ids()
    leaving = [f"u{i:03}" for i in range(30)]
    staying = [f"u{i:03}" for i in range(30, 40)]
    keys = {name: emulator.generate_key(user_id=uid[name])["key"] for name in leaving + staying}
    for name in leaving:
        realm.remove_user_from_group(name, "/llm/big")
    emulator.set_faults([{"path": "/key/*", "method": "POST", "latency_ms": 40},
                         {"path": "/user/update", "latency_ms": 40}])
    proc = subprocess.Popen([*syncd_cmd(syncd), "--once"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=syncd_env(syncd))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(w["path"] == "/key/block" for w in emulator.audit()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The kill switch goes first (every leaver is cut off already); key blocks follow.
    assert all(not emulator.auth_check(keys[n])["allowed"] for n in leaving)
    blocked_keys = sum(1 for k in emulator.state()["keys"] if k["blocked"])
    assert 0 < blocked_keys < len(leaving)  # really interrupted half way
    emulator.clear_faults()
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert all(not emulator.auth_check(keys[n])["allowed"] for n in leaving)
    assert all(emulator.auth_check(keys[n])["allowed"] for n in staying)
    assert syncd.once().json["summary"]["ll_writes"] == 0


def syncd_cmd(syncd: Syncd) -> list[str]:
    import yaml

    from tests.integration.harness import SYNCD

    path = syncd.tmp / "syncd.yaml"
    path.write_text(yaml.safe_dump(syncd.config))
    return [SYNCD, "--config", str(path)]


def syncd_env(syncd: Syncd) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(syncd.env)
    return env


def test_delete_policy_after_grace_period_deletes_keys_then_user(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    syncd.config["departures"] = {"policy": "delete", "grace_days": 30}
    assert syncd.once().code == 0
    uid = realm.user_ids()
    bob = uid["bob"]
    key = emulator.generate_key(user_id=bob, key_alias="bob-key")["key"]
    realm.disable_user("bob")
    assert syncd.once().code == 0
    assert not emulator.auth_check(key)["allowed"]
    assert any(k["key_alias"] == "bob-key" for k in emulator.state()["keys"])  # only blocked
    # The clock lives in LiteLLM: move it back past the grace period.
    meta = users(emulator)[bob]["metadata"]
    meta["syncd_blocked_at"] = "2020-01-01T00:00:00Z"
    with emulator.client(headers={"litellm-changed-by": "test"}) as c:
        c.post("/user/update", json={"user_id": bob, "metadata": meta}).raise_for_status()
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert not any(k["key_alias"] == "bob-key" for k in emulator.state()["keys"])
    assert bob in users(emulator)  # delete_users is off
    syncd.config["departures"]["delete_users"] = True
    assert syncd.once().code == 0
    assert bob not in users(emulator)
    assert syncd.once().json["summary"]["ll_writes"] == 0
