"""No wrongful or irreversible revocation (issue 10), against the real Keycloak and
the emulator (member_delete deleting the member's team keys, as LiteLLM 1.110.2
does). Access is proved with the emulator's key-auth check."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from syncd.config import load_settings
from syncd.confirm import Confirmer
from syncd.evidence import GroupGone, SourceFacts, UserOutside
from syncd.http import ApiClient, RequestCounter, RetryBudget
from syncd.keycloak import KeycloakReader, TokenProvider
from syncd.metrics import Metrics
from syncd.operations import BlockTeam, BlockUser, RemoveMember
from syncd.reconciler import rules_from
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.fixtures.latency_proxy import LatencyProxy
from tests.integration.harness import Syncd, members, teams, users

BIG = 120
GROUPS = ["/llm/research", "/llm/platform", "/llm/big", "/other"]
PEOPLE = [
    User("alice", "alice@example.com", groups=["/llm/research", "/llm/platform"]),
    User("bob", "bob@example.com", groups=["/llm/research"]),
    User("carol", "carol@example.com", groups=["/llm/platform", "/other"]),
    *[User(f"u{i:03}", f"u{i:03}@example.com", groups=["/llm/big"]) for i in range(BIG)],
]


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    return realm_factory(groups=GROUPS, users=PEOPLE)


@pytest.fixture
def syncd(realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path) -> Syncd:
    return Syncd(realm, emulator, tmp_path, keycloak={"page_size": 40})


def allowed(emulator: EmulatorAdmin, key: str) -> bool:
    return bool(emulator.auth_check(key)["allowed"])


def test_member_removed_mid_read_costs_nobody_else_their_access(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    """Defect 1: removing one member while syncd pages through the group shifted
    the later pages; the member at the page boundary was revoked."""
    assert syncd.once().code == 0
    uid = realm.user_ids()
    big = realm.group_id("/llm/big")
    keys = {f"u{i:03}": emulator.generate_key(user_id=uid[f"u{i:03}"], team_id=big)["key"]
            for i in range(BIG)}
    removed: list[str] = []

    def remove_before_second_page(method: str, path: str) -> None:
        if f"/groups/{big}/members" in path and "first=0" not in path and not removed:
            realm.remove_user_from_group("u002", "/llm/big")  # on the first page
            removed.append("u002")

    kc = urlsplit(realm.url)
    with LatencyProxy(kc.hostname or "127.0.0.1", kc.port or 80, latency=0.01,
                      on_request=remove_before_second_page) as proxy:
        syncd.config["keycloak"]["url"] = proxy.url
        result = syncd.once()
    syncd.config["keycloak"]["url"] = realm.url
    assert removed, "the removal was not made during the read"
    assert result.code == 0, result.stdout + result.stderr
    wrongly = [name for name, key in keys.items() if name != "u002" and not allowed(emulator, key)]
    assert wrongly == []
    state = users(emulator)
    assert all(state[uid[n]]["metadata"].get("scim_active") is not False
               for n in keys if n != "u002")
    # u002 was on the page already read: the next run cuts them off, and only them
    again = syncd.once()
    assert again.code == 0, again.json["error"]
    assert not allowed(emulator, keys["u002"])
    assert [n for n, k in keys.items() if n != "u002" and not allowed(emulator, k)] == []


def test_disable_then_enable_gives_back_personal_and_team_keys(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    """Defect 2: a departure removed the user from their teams, and member_delete
    deleted the team key for ever."""
    assert syncd.once().code == 0
    uid, ids = realm.user_ids(), realm.group_ids()
    bob = uid["bob"]
    team_key = emulator.generate_key(user_id=bob, team_id=ids["/llm/research"])["key"]
    personal = emulator.generate_key(user_id=bob, key_alias="bob-laptop")["key"]
    realm.disable_user("bob")
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert not allowed(emulator, team_key) and not allowed(emulator, personal)
    assert bob in members(teams(emulator)[ids["/llm/research"]])  # nothing deleted
    realm.enable_user("bob")
    assert syncd.once().code == 0
    assert allowed(emulator, team_key) and allowed(emulator, personal)
    assert syncd.once().json["summary"]["ll_writes"] == 0


def test_group_moved_out_of_selection_and_back(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    assert syncd.once().code == 0
    uid, ids = realm.user_ids(), realm.group_ids()
    platform = ids["/llm/platform"]
    key = emulator.generate_key(user_id=uid["alice"], team_id=platform)["key"]
    before = members(teams(emulator)[platform])
    syncd.config["selection"]["exclude_paths"] = ["/llm/platform"]
    assert syncd.once().code == 0
    team = teams(emulator)[platform]
    assert team["blocked"] is True and members(team) == before  # archived, nothing removed
    assert not allowed(emulator, key)
    syncd.config["selection"]["exclude_paths"] = []
    assert syncd.once().code == 0
    assert teams(emulator)[platform]["blocked"] is False
    assert allowed(emulator, key)
    assert users(emulator)[uid["carol"]]["metadata"]["scim_active"] is True  # came back too


def test_user_not_managed_by_syncd_is_only_taken_out_of_the_team(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    """Defect 3: a hand-made LiteLLM user in a managed team was blocked everywhere."""
    assert syncd.once().code == 0
    research = realm.group_id("/llm/research")
    emulator.create_user("sso-person", user_email="sso@example.com")
    emulator.create_team(team_id="hand-made", team_alias="hand-made")
    emulator.add_member("hand-made", "sso-person")
    emulator.add_member(research, "sso-person")
    other_key = emulator.generate_key(user_id="sso-person", team_id="hand-made")["key"]
    personal = emulator.generate_key(user_id="sso-person")["key"]
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert "sso-person" not in members(teams(emulator)[research])
    assert "sso-person" in members(teams(emulator)["hand-made"])
    assert allowed(emulator, other_key) and allowed(emulator, personal)
    assert users(emulator)["sso-person"]["metadata"].get("scim_active") is not False


def test_adoption_keeps_keys_of_non_members(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    """Defect 4: adopting a team deleted a CI bot's key bound to it."""
    platform = realm.group_id("/llm/platform")
    emulator.create_team(team_id=platform, team_alias="platform-old")
    emulator.create_user("ci-bot")
    bot_key = emulator.generate_key(user_id="ci-bot", team_id=platform)["key"]
    syncd.config["teams"] = {"adopt_existing": True}
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert teams(emulator)[platform]["metadata"]["syncd_managed"] is True
    assert allowed(emulator, bot_key)


def test_small_organisation_cuts_off_one_leaver_without_force(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    """Defect 5: with 20 memberships the default 10 % limit braked a single departure."""
    people = [User(f"p{i:02}", groups=["/llm/small"]) for i in range(20)]
    realm = realm_factory(groups=["/llm/small"], users=people)
    syncd = Syncd(realm, emulator, tmp_path)
    assert syncd.once().code == 0
    uid = realm.user_ids()
    keys = {n: emulator.generate_key(user_id=uid[n])["key"] for n in ("p00", "p01")}
    realm.remove_user_from_group("p00", "/llm/small")
    result = syncd.once()
    assert result.code == 0, result.stdout
    assert not allowed(emulator, keys["p00"]) and allowed(emulator, keys["p01"])


def test_brake_and_failures_together_exit_7(
    syncd: Syncd, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    syncd.config["safety"] = {"max_blocked": 1}
    assert syncd.once().code == 0
    for name in ("u010", "u011"):
        realm.remove_user_from_group(name, "/llm/big")
    realm.add_user_to_group("u012", "/llm/research")
    emulator.set_faults([{"path": "/team/member_add", "error_rate": 1.0, "error_status": 500}])
    result = syncd.once()
    assert result.code == 7, result.stdout
    summary = result.json["summary"]
    assert summary["failed"] >= 1 and summary["held_back"] == 2


# --- the confirmation step, against the real Keycloak --------------------------------


def _confirm(realm: KeycloakRealm, tmp_path: Path, facts: SourceFacts,
             ops: list[object]) -> tuple[list[object], list[tuple[object, str]]]:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"keycloak: {{url: '{realm.url}', realm: {realm.name}, client_id: {realm.client_id}}}\n"
        "litellm: {url: 'http://127.0.0.1:9'}\nselection: {path_prefixes: ['/llm']}\n"
    )
    settings = load_settings(config, {"SYNCD_KEYCLOAK__CLIENT_SECRET": realm.client_secret,
                                      "SYNCD_LITELLM__API_KEY": "sk-x"})

    async def run() -> tuple[list[object], list[tuple[object, str]]]:
        api = ApiClient("keycloak", settings.keycloak.url, verify=True, timeout=10,
                        concurrency=4, retries=settings.retries, budget=RetryBudget(5),
                        metrics=Metrics(), counter=RequestCounter())
        tokens = TokenProvider(settings.keycloak)
        try:
            kc = settings.keycloak
            reader = KeycloakReader(api, tokens, realm=kc.realm, page_size=kc.page_size,
                                    client_id=kc.client_id)
            confirmer = Confirmer(reader, facts, rules_from(settings))
            kept, dropped = await confirmer.confirm(ops)  # type: ignore[arg-type]
            return list(kept), list(dropped)
        finally:
            await api.aclose()
            await tokens.aclose()

    return asyncio.run(run())


def test_confirmation_drops_what_keycloak_contradicts(
    realm: KeycloakRealm, tmp_path: Path
) -> None:
    uid, ids = realm.user_ids(), realm.group_ids()
    facts = SourceFacts({ids[p]: frozenset({ids[p]}) for p in GROUPS if p.startswith("/llm")},
                        frozenset(ids.values()))
    bob, alice = uid["bob"], uid["alice"]
    research = ids["/llm/research"]
    # bob is still there
    stale_block = BlockUser(bob, "departed", "departed", {}, UserOutside(bob, bob))
    wrong_remove = RemoveMember(research, alice, "left_group", "left",
                                UserOutside(alice, alice, frozenset({research})))
    gone = BlockUser("no-such-user", "departed", "departed", {},
                     UserOutside("no-such-user", "no-such-user"))
    kept_group = BlockTeam(research, "group_gone", "gone", {}, GroupGone(research))
    realm.delete_user("carol")
    deleted = BlockUser(uid["carol"], "departed", "departed", {},
                        UserOutside(uid["carol"], uid["carol"]))
    kept, dropped = _confirm(realm, tmp_path, facts,
                             [stale_block, wrong_remove, gone, kept_group, deleted])
    assert kept == [gone, deleted]
    assert [op for op, _ in dropped] == [stale_block, wrong_remove, kept_group]
    why = [reason for _, reason in dropped]
    assert "/llm/research" in why[0] and "/llm/research" in why[1] and "selected" in why[2]


def test_a_failed_re_read_drops_the_operation(tmp_path: Path, realm: KeycloakRealm) -> None:
    down = KeycloakRealm(realm.name, "http://127.0.0.1:9", realm.client_id, realm.client_secret,
                         realm.admin, {})
    op = BlockTeam("g", "group_gone", "gone", {}, GroupGone("g"))
    kept, dropped = _confirm(down, tmp_path, SourceFacts({}, frozenset()), [op])
    assert kept == [] and len(dropped) == 1 and "could not re-read" in dropped[0][1]
