"""Runs that outlive their Keycloak token: a 5 s token lifespan and a slow Keycloak.

Keycloak's access tokens for the client-credentials grant live for the realm's
``accessTokenLifespan``; some realms set it to seconds. A read of a large tree
through a slow link then takes several lifespans, and every request must carry
a token that is valid *when it is sent* (after it waited for its concurrency
slot), not when it was queued. The slow link is a real TCP proxy on loopback
(tests/fixtures/latency_proxy.py) in front of the real Keycloak.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from syncd.config import Settings
from syncd.errors import SourceReadError
from syncd.http import ApiClient, RequestCounter, RetryBudget
from syncd.keycloak import KeycloakReader, TokenProvider
from syncd.metrics import Metrics
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.fixtures.latency_proxy import LatencyProxy
from tests.integration.harness import Syncd, members, teams

LIFESPAN = 5
GROUPS = 50


def set_lifespan(realm: KeycloakRealm, seconds: int) -> None:
    realm.admin.request("PUT", f"/admin/realms/{realm.name}",
                        json_body={"accessTokenLifespan": seconds})


@pytest.fixture
def big_realm(realm_factory: RealmFactory) -> KeycloakRealm:
    groups = {f"/llm/g{i:02d}": {} for i in range(GROUPS)}
    users = [User(f"u{i:02d}", f"u{i:02d}@example.com", groups=[f"/llm/g{i:02d}"])
             for i in range(GROUPS)]
    realm = realm_factory(groups=groups, users=users)
    set_lifespan(realm, LIFESPAN)
    return realm


def token_requests(proxy: LatencyProxy) -> int:
    return sum(1 for _, path in proxy.requests if path.endswith("/openid-connect/token"))


def test_a_run_several_token_lifespans_long_succeeds(
    big_realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    host, port = big_realm.url.removeprefix("http://").split(":")
    with LatencyProxy(host, int(port), latency=0.7) as proxy:
        syncd = Syncd(big_realm, emulator, tmp_path,
                      keycloak={"concurrency": 2, "page_size": 10})
        syncd.config["keycloak"]["url"] = proxy.url
        result = syncd.once(timeout=300)
    assert result.code == 0, result.stdout + result.stderr[-3000:]
    duration = result.json["summary"]["duration"]
    assert duration > 3 * LIFESPAN, f"the run took {duration}s: not long enough to test"
    assert token_requests(proxy) >= 3  # the run outlived its first tokens
    got = teams(emulator)
    uid = big_realm.user_ids()
    for i in range(GROUPS):
        assert members(got[big_realm.group_id(f"/llm/g{i:02d}")]) == {uid[f"u{i:02d}"]: "user"}


def _reader(settings: Settings, api: ApiClient, tokens: TokenProvider) -> KeycloakReader:
    kc = settings.keycloak
    return KeycloakReader(api, tokens, realm=kc.realm, page_size=kc.page_size,
                          client_id=kc.client_id)


def tokens_fetched(metrics: Metrics) -> float:
    """Token requests Keycloak granted, as the request metrics count them."""
    labels = {"target": "keycloak", "method": "POST", "status": "200"}
    return metrics.registry.get_sample_value("syncd_http_requests_total", labels) or 0.0


def _settings(realm: KeycloakRealm, emulator: EmulatorAdmin) -> Settings:
    return Settings.model_validate({
        "keycloak": {"url": realm.url, "realm": realm.name, "client_id": realm.client_id,
                     "client_secret": realm.client_secret},
        "litellm": {"url": emulator.url, "api_key": emulator.master_key},
        "selection": {"path_prefixes": ["/llm"]},
    })


async def test_a_rejected_token_is_refreshed_once_and_the_read_resent(
    realm_factory: RealmFactory, emulator: EmulatorAdmin
) -> None:
    """Keycloak rejects every token issued before the realm's ``notBefore`` (an admin's
    "revoke all"): the read that meets 401 takes one fresh token and is sent again."""
    realm = realm_factory(groups=["/llm/a"], users=[User("ann", groups=["/llm/a"])])
    settings = _settings(realm, emulator)
    metrics, counter = Metrics(), RequestCounter()
    api = ApiClient("keycloak", realm.url, verify=True, timeout=10, concurrency=2,
                    retries=settings.retries, budget=RetryBudget(5), metrics=metrics,
                    counter=counter)
    tokens = TokenProvider(settings.keycloak)
    reader = _reader(settings, api, tokens)
    try:
        assert len(await reader.read_groups()) == 1
        assert tokens_fetched(metrics) == 1
        time.sleep(1.1)
        realm.admin.request("PUT", f"/admin/realms/{realm.name}",
                            json_body={"notBefore": int(time.time())})
        time.sleep(1.1)
        assert len(await reader.read_groups()) == 1  # the cached token is refused
        assert tokens_fetched(metrics) == 2
    finally:
        await api.aclose()
        await tokens.aclose()


async def test_a_token_refused_twice_is_a_read_failure(
    realm_factory: RealmFactory, emulator: EmulatorAdmin
) -> None:
    """Without the role to read, each fresh token is refused too: one refresh, then
    a clear error (exit 4), no loop of token requests."""
    realm = realm_factory(groups=["/llm/a"], users=[User("ann", groups=["/llm/a"])])
    settings = _settings(realm, emulator)
    metrics = Metrics()
    api = ApiClient("keycloak", realm.url, verify=True, timeout=10, concurrency=2,
                    retries=settings.retries, budget=RetryBudget(5), metrics=metrics,
                    counter=RequestCounter())
    tokens = TokenProvider(settings.keycloak)
    reader = _reader(settings, api, tokens)
    try:
        await reader.read_groups()
        # From now on Keycloak refuses every token: not before a moment in the future.
        realm.admin.request("PUT", f"/admin/realms/{realm.name}",
                            json_body={"notBefore": int(time.time()) + 3600})
        with pytest.raises(SourceReadError, match="401"):
            await reader.read_groups()
        assert tokens_fetched(metrics) == 2
    finally:
        await api.aclose()
        await tokens.aclose()
        realm.admin.request("PUT", f"/admin/realms/{realm.name}", json_body={"notBefore": 0})
