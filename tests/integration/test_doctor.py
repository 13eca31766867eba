"""``syncd doctor`` (issue 23) against the real Keycloak and the emulator.

Each check has a set-up that makes it warn or fail, and one where everything
passes; doctor never writes (the emulator's audit log stays empty) and exits
0 (all pass), 1 (warnings) or 2 (a failure).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import Result, Syncd

pytestmark = pytest.mark.integration

EVERY_CHECK = [
    "keycloak.reachable", "keycloak.credentials", "keycloak.view-users", "keycloak.view-events",
    "keycloak.admin-events", "keycloak.events-expiration", "litellm.reachable",
    "litellm.key-role", "litellm.version", "litellm.licence", "selection.groups",
    "selection.nested", "identity.collisions", "identity.links", "ownership.alias-clash",
    "ownership.orphan-teams", "ownership.brake", "ownership.orphan-users",
]


def statuses(result: Result) -> dict[str, str]:
    return {c["check"]: c["status"] for c in result.json["checks"]}


def detail(result: Result, name: str) -> str:
    found = [c for c in result.json["checks"] if c["check"] == name]
    assert found, result.json
    return f"{found[0]['detail']} -- fix: {found[0]['fix']}"


def set_expiration(realm: KeycloakRealm, seconds: str) -> None:
    base = f"/admin/realms/{realm.name}"
    rep = realm.admin.get(base)
    rep.setdefault("attributes", {})["adminEventsExpiration"] = seconds
    realm.admin.request("PUT", base, json_body=rep)


def test_everything_passes_on_a_set_up_done_as_the_readme_says(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups={"/llm/red": {}},
                          users=[User("ann", "ann@example.com", groups=["/llm/red"])],
                          service_account_roles=("view-users", "view-events", "view-realm"))
    realm.enable_admin_events()
    set_expiration(realm, "604800")
    syncd = Syncd(realm, emulator, tmp_path, key="proxy_admin")
    assert syncd.once().code == 0
    emulator.clear_audit()
    result = syncd.run("doctor", "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert statuses(result) == dict.fromkeys(EVERY_CHECK, "PASS")
    text = syncd.run("doctor")
    assert text.code == 0
    lines = text.stdout.strip().splitlines()
    assert len(lines) == len(EVERY_CHECK) + 1 and all(line.startswith("PASS  ")
                                                      for line in lines[:-1])
    assert lines[-1] == f"doctor: {len(EVERY_CHECK)} passed, 0 warning(s), 0 failure(s)"
    assert emulator.audit() == []


def test_each_warning_with_its_fix(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(
        groups={"/llm/red": {"litellm.admins": "ann"}, "/llm/old": {}, "/llm/blue": {},
                "/corp/ai": {"litellm.sync": "true"}, "/corp/ai/ml": {}},
        users=[User("ann", "ann@example.com", groups=["/llm/red", "/corp/ai/ml"]),
               User("ben", "ben@example.com", groups=["/llm/old"]),
               User("eve", "eve@example.com", groups=["/llm/blue"])],
        service_account_roles=("view-users",))  # no view-events: the fast path is off
    emulator.create_user("legacy-eve", user_email="eve@example.com")  # a collision
    syncd = Syncd(realm, emulator, tmp_path, key="master",
                  selection={"path_prefixes": ["/llm"], "attribute": "litellm.sync"},
                  safety={"max_blocked": 1},
                  users={"link_by_email": "false"})  # legacy-eve is not taken over
    assert syncd.once().code == 0  # eve is synced, her email withheld (issue 24)
    emulator.create_team(team_alias="red")  # made by hand, clashing with syncd's red
    realm.delete_group("/llm/old")  # its team is orphaned
    realm.delete_user("ben")  # syncd's user, gone from Keycloak
    emulator.clear_audit()
    result = syncd.run("doctor", "--json")
    assert result.code == 1, result.stdout + result.stderr
    got = statuses(result)
    warned = {name for name, status in got.items() if status == "WARN"}
    assert warned == {"keycloak.view-events", "litellm.key-role", "litellm.licence",
                      "selection.nested", "identity.collisions", "ownership.alias-clash",
                      "ownership.orphan-teams", "ownership.orphan-users", "ownership.brake"}, got
    assert "FAIL" not in got.values()
    assert "realm-management role view-events" in detail(result, "keycloak.view-events")
    assert "master key" in detail(result, "litellm.key-role")
    assert "1 team admin(s)" in detail(result, "litellm.licence")
    assert "/corp/ai/ml" in detail(result, "selection.nested")
    assert "legacy-eve" in detail(result, "identity.collisions")
    assert "red [" in detail(result, "ownership.alias-clash")
    assert "old [" in detail(result, "ownership.orphan-teams")
    assert "1 syncd user(s)" in detail(result, "ownership.orphan-users")
    assert "safety.max_blocked=1" in detail(result, "ownership.brake")
    assert emulator.audit() == []


def test_each_failure_with_its_fix(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups={"/llm/red": {}},
                          users=[User("ann", "ann@example.com", groups=["/llm/red"])],
                          service_account_roles=("view-users", "view-events", "view-realm"))
    syncd = Syncd(realm, emulator, tmp_path, key="internal_user")
    result = syncd.run("doctor", "--json")
    assert result.code == 2
    got = statuses(result)
    assert got["litellm.key-role"] == "FAIL" and got["plan"] == "FAIL"
    assert "proxy_admin" in detail(result, "litellm.key-role")
    # Admin events off and no expiration: a warning under auto, a failure under true.
    assert got["keycloak.admin-events"] == "WARN"
    assert got["keycloak.events-expiration"] == "WARN"
    assert "never expire" in detail(result, "keycloak.events-expiration")

    syncd.env["SYNCD_LITELLM__API_KEY"] = emulator.master_key
    syncd.config["events"] = {"enabled": "true"}
    syncd.config["selection"] = {"path_prefixes": ["/nothing"], "attribute": None}
    result = syncd.run("doctor", "--json")
    assert result.code == 2
    got = statuses(result)
    assert got["keycloak.admin-events"] == "FAIL"
    assert "Save events" in detail(result, "keycloak.admin-events")
    assert got["selection.groups"] == "FAIL"
    assert "0 of " in detail(result, "selection.groups")

    syncd.env["SYNCD_KEYCLOAK__CLIENT_SECRET"] = "not-the-secret"
    result = syncd.run("doctor", "--json")
    assert result.code == 2 and statuses(result)["keycloak.credentials"] == "FAIL"
    syncd.env["SYNCD_KEYCLOAK__CLIENT_SECRET"] = realm.client_secret

    realm.remove_service_account_role("view-users")
    result = syncd.run("doctor", "--json")
    assert result.code == 2 and statuses(result)["keycloak.view-users"] == "FAIL"
    assert "view-users" in detail(result, "keycloak.view-users")

    syncd.config["litellm"]["url"] = "http://127.0.0.1:9"
    syncd.config["keycloak"]["realm"] = "no-such-realm"
    result = syncd.run("doctor", "--json")
    assert result.code == 2
    got = statuses(result)
    assert got["keycloak.reachable"] == "FAIL" and got["litellm.reachable"] == "FAIL"
    assert "does not exist" in detail(result, "keycloak.reachable")
    assert emulator.audit() == []
