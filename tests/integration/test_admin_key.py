"""syncd on a dedicated proxy_admin key, not the master key (issue 15).

The key scenarios of test_sync.py, run with a key of the service user
``svc-syncd`` (``user_role: proxy_admin``). LiteLLM adds that user as admin to
every team the key creates; syncd must never remove it. Whether people keep
or lose access is checked black-box, with the bearer calls an application
makes on real routes (``/chat/completions``, ``/v1/models``), never with an
``/_emulator/`` route.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import SERVICE_USER, Syncd, answers, members, teams, users

GROUPS = {"/llm/research": {}, "/llm/platform": {}}
PEOPLE = [
    User("alice", "alice@example.com", groups=["/llm/research", "/llm/platform"]),
    User("bob", "bob@example.com", groups=["/llm/research"]),
]


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    return realm_factory(groups=GROUPS, users=PEOPLE)


@pytest.fixture
def syncd(realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path) -> Syncd:
    return Syncd(realm, emulator, tmp_path, key="proxy_admin")


def syncd_writes(emulator: EmulatorAdmin) -> list[dict[str, object]]:
    return [w for w in emulator.audit() if w["changed_by"] == "syncd"]


def service_user_everywhere(emulator: EmulatorAdmin) -> bool:
    """The key's own user is still admin on every team and was never cut off."""
    got = teams(emulator)
    admin = users(emulator)[SERVICE_USER]
    return (
        bool(got)
        and all(
            {"user_id": SERVICE_USER, "role": "admin"}.items() <= m.items()
            for t in got.values()
            for m in t["members_with_roles"]
            if m.get("user_id") == SERVICE_USER
        )
        and all(
            any(m.get("user_id") == SERVICE_USER for m in t["members_with_roles"])
            for t in got.values()
        )
        and admin["metadata"].get("scim_active") is not False
    )


def test_an_internal_users_key_is_refused_before_any_write(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    syncd = Syncd(realm, emulator, tmp_path, key="internal_user")
    result = syncd.once()
    assert result.code == 5, result.stdout
    error = result.json["error"]
    assert error == (
        f"litellm.api_key belongs to user {SERVICE_USER} with role internal_user, which cannot "
        "manage teams, users and keys: role proxy_admin is missing; create a proxy_admin "
        "service user and key as in docs/deploy.md"
    )
    assert "\n" not in error
    assert syncd.api_key not in result.stdout + result.stderr
    assert syncd_writes(emulator) == []
    assert teams(emulator) == {}


def test_first_sync_on_a_proxy_admin_key_and_no_drift_after(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    first = syncd.once()
    assert first.code == 0, first.stdout
    ids, uid = realm.group_ids(), realm.user_ids()
    got = teams(emulator)
    assert members(got[ids["/llm/research"]]) == {uid["alice"]: "user", uid["bob"]: "user"}
    assert service_user_everywhere(emulator)  # auto-added by LiteLLM as the creator
    assert "default_user_id" not in users(emulator)
    assert syncd_writes(emulator)  # attributed to syncd
    second = syncd.once()
    assert second.code == 0 and second.json["summary"]["ll_writes"] == 0
    assert SERVICE_USER not in str(second.json["plan"])
    assert syncd.run("--check").code == 0
    assert service_user_everywhere(emulator)


def test_departed_users_keys_are_refused_and_a_returning_users_accepted(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    assert syncd.once().code == 0
    uid, ids = realm.user_ids(), realm.group_ids()
    personal = emulator.generate_key(user_id=uid["alice"], key_alias="alice-laptop")["key"]
    team_key = emulator.generate_key(user_id=uid["alice"], team_id=ids["/llm/research"])["key"]
    assert (answers(emulator, personal), answers(emulator, team_key)) == (200, 200)

    realm.disable_user("alice")
    assert syncd.once().code == 0
    assert (answers(emulator, personal), answers(emulator, team_key)) == (401, 401)
    assert service_user_everywhere(emulator)

    realm.enable_user("alice")
    assert syncd.once().code == 0
    assert (answers(emulator, personal), answers(emulator, team_key)) == (200, 200)
    assert service_user_everywhere(emulator)


def test_leaving_one_team_refuses_that_teams_key_only(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    assert syncd.once().code == 0
    uid, ids = realm.user_ids(), realm.group_ids()
    research = emulator.generate_key(user_id=uid["alice"], team_id=ids["/llm/research"])["key"]
    platform = emulator.generate_key(user_id=uid["alice"], team_id=ids["/llm/platform"])["key"]
    assert (answers(emulator, research), answers(emulator, platform)) == (200, 200)

    realm.remove_user_from_group("alice", "/llm/research")
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert (answers(emulator, research), answers(emulator, platform)) == (401, 200)
    assert uid["alice"] not in members(teams(emulator)[ids["/llm/research"]])
    assert service_user_everywhere(emulator)
    assert syncd.once().json["summary"]["ll_writes"] == 0
