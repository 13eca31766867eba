"""The realm builder and the committed demo realm.

Why: the demo and many tests stand on ``devtools.realm``; if the committed
config/demo-realm.json drifted from ``demo_realm()`` or stopped importing into
Keycloak, ``make demo`` would break in a way unit tests of syncd cannot see.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.keycloak_local import AdminClient, KeycloakServer
from devtools.realm import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REALM,
    User,
    build_realm,
    demo_realm,
    normalize_groups,
)

DEMO_FILE = Path(__file__).resolve().parents[2] / "config" / "demo-realm.json"


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def test_committed_demo_realm_is_generated_output() -> None:
    """Regenerate with ``python -m devtools.realm demo > config/demo-realm.json``."""
    assert json.loads(DEMO_FILE.read_text()) == demo_realm()


def test_demo_realm_shape() -> None:
    realm = demo_realm()
    assert realm["realm"] == DEMO_REALM == "acme"
    assert not [k for k, _ in _walk(realm) if k == "id"]  # Keycloak assigns ids
    (client,) = realm["clients"]
    assert client["clientId"] == DEMO_CLIENT_ID
    assert client["secret"] == DEMO_CLIENT_SECRET == "demo-secret-change-me"
    assert client["serviceAccountsEnabled"] is True
    assert client["publicClient"] is False
    assert client["standardFlowEnabled"] is False
    users = {u["username"]: u for u in realm["users"]}
    sa = users.pop("service-account-syncd")
    assert sa["serviceAccountClientId"] == "syncd"
    assert sa["clientRoles"] == {"realm-management": ["view-users", "view-events"]}
    assert realm["adminEventsEnabled"] is True  # the daemon part follows admin events
    assert len(users) == 170
    counts = Counter(g for u in users.values() for g in u.get("groups", []))
    assert counts["/llm/support"] == 160
    assert "/llm" not in counts  # a parent with no direct members
    assert counts["/finance"] > 0 and counts["/data-science"] > 0
    disabled = [u for u in users.values() if not u["enabled"]]
    assert len(disabled) == 1 and "/llm/research" in disabled[0]["groups"]
    assert sum(1 for u in users.values() if len(u.get("groups", [])) > 1) >= 5
    assert all(u["email"] == f"{u['username']}@acme.example" for u in users.values())
    groups = dict(_group_attrs(realm["groups"]))
    assert groups["/data-science"] == {
        "litellm.sync": ["true"],
        "litellm.models": ["gpt-4o-mini"],
        "litellm.max_budget": ["50"],
    }
    assert groups["/llm/platform"] == {"litellm.tpm_limit": ["100000"]}
    assert {"/llm/research/vision", "/llm/research/admins", "/finance"} <= set(groups)


def _group_attrs(nodes: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for node in nodes:
        yield node["path"], node.get("attributes", {})
        yield from _group_attrs(node["subGroups"])


def test_build_realm_spec_conveniences() -> None:
    assert normalize_groups({"a/b/": {"k": "v"}, "/c": None}) == {
        "/a": {},
        "/a/b": {"k": ["v"]},
        "/c": {},
    }
    realm = build_realm(
        "x",
        groups=["/llm/a"],
        users=[{"username": "bob", "groups": ["llm/a"], "enabled": False}],
        service_account_roles=("view-users", "view-events"),
    )
    (llm,) = realm["groups"]
    assert [g["path"] for g in llm["subGroups"]] == ["/llm/a"]
    bob = realm["users"][0]
    assert bob == {"username": "bob", "enabled": False, "groups": ["/llm/a"]}
    assert realm["users"][-1]["clientRoles"] == {"realm-management": ["view-users", "view-events"]}
    with pytest.raises(ValueError, match="unknown groups"):
        build_realm("x", groups=["/a"], users=[User("u", groups=["/typo"])])
    with pytest.raises(ValueError, match="duplicate"):
        build_realm("x", users=[User("u"), User("u")])


def test_demo_realm_imports_and_reads_through_the_service_account(
    keycloak_server: KeycloakServer, keycloak_admin: AdminClient
) -> None:
    rep = copy.deepcopy(demo_realm())
    rep["realm"] = name = "demo-import-check"
    keycloak_admin.delete_realm(name)
    keycloak_admin.create_realm(rep)
    try:
        token = httpx.post(
            f"{keycloak_server.url}/realms/{name}/protocol/openid-connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET,
            },
        ).json()["access_token"]
        with httpx.Client(
            base_url=f"{keycloak_server.url}/admin/realms/{name}",
            headers={"Authorization": f"Bearer {token}"},
        ) as sa:
            top = {g["path"]: g for g in sa.get("/groups").json()}
            assert set(top) == {"/llm", "/finance", "/data-science"}
            assert top["/llm"]["subGroupCount"] == 3
            support = keycloak_admin.group_id(name, "/llm/support")
            first = sa.get(f"/groups/{support}/members").json()
            rest = sa.get(f"/groups/{support}/members", params={"first": 100}).json()
            assert (len(first), len(rest)) == (100, 60)
            research = keycloak_admin.group_id(name, "/llm/research")
            members = sa.get(f"/groups/{research}/members").json()
            assert [u["enabled"] for u in members].count(False) == 1
    finally:
        keycloak_admin.delete_realm(name)
