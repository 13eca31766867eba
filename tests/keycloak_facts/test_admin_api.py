"""Facts about Keycloak's admin REST API that syncd relies on, checked on a real server.

Why: syncd's reader pages groups, children and members itself and trusts
particular defaults (children page size 10, members page size 100, listings
that omit ``subGroups``...).  Should a Keycloak upgrade change any of them,
these tests say so before syncd silently drops teams or members.

Every call goes through the ``syncd`` client's service account
(client-credentials token), as in production, unless a test is about the
arranging admin.  Findings that differ from shared/reference/keycloak-api.md
are listed in FINDINGS.md beside this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from keycloak import KeycloakAdmin, KeycloakOpenID, KeycloakOpenIDConnection
from keycloak.exceptions import (
    KeycloakAuthenticationError,
    KeycloakConnectionError,
    KeycloakError,
    KeycloakGetError,
)

from devtools.keycloak_local import AdminClient, KeycloakServer, free_port
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory, realm_context

TOP_LEVEL_EXTRA = 22  # g-00..g-21, plus /llm, /finance, /data-science = 25 top-level groups
LLM_CHILDREN = 15  # /llm/team-00 .. /llm/team-14: more than one children page of 10
BIG_GROUP = "/llm/team-00"
BIG_GROUP_SIZE = 120  # more than one members page of 100
DISABLED = "member-007"


def _facts_spec() -> dict[str, Any]:
    groups: dict[str, dict[str, list[str]]] = {f"/g-{i:02d}": {} for i in range(TOP_LEVEL_EXTRA)}
    groups.update({f"/llm/team-{i:02d}": {} for i in range(LLM_CHILDREN)})
    groups["/llm/team-00/nested"] = {}
    groups["/llm/team-01"] = {"litellm.sync": ["true"]}
    groups["/llm/team-02"] = {"litellm.tpm_limit": ["100000"]}
    groups["/finance"] = {}
    groups["/data-science"] = {
        "litellm.sync": ["true"],
        "litellm.models": ["gpt-4o-mini"],
        "litellm.max_budget": ["50"],
    }
    users = [
        User(
            f"member-{i:03d}",
            email=f"member-{i:03d}@example.test",
            first_name="Member",
            last_name=f"No{i}",
            enabled=f"member-{i:03d}" != DISABLED,
            groups=[BIG_GROUP],
        )
        for i in range(BIG_GROUP_SIZE)
    ]
    users += [User(f"nested-{i}", groups=["/llm/team-00/nested"]) for i in range(3)]
    users.append(User("both", groups=["/llm/team-01", "/data-science"]))
    return {"groups": groups, "users": users}


@pytest.fixture(scope="module")
def facts_realm(
    keycloak_server: KeycloakServer, keycloak_admin: AdminClient
) -> Iterator[KeycloakRealm]:
    """One read-only realm for the whole module: importing 125 users once keeps it quick."""
    with realm_context(keycloak_server.url, keycloak_admin, **_facts_spec()) as realm:
        yield realm


@pytest.fixture(scope="module")
def sa(facts_realm: KeycloakRealm) -> Iterator[httpx.Client]:
    """Admin-API client authenticated as the service account (token lives 300 s)."""
    with facts_realm.service_account_client() as client:
        yield client


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


# --------------------------------------------------------------------- groups


def test_groups_lists_top_level_only_sorted_by_name_and_unbounded_by_default(
    sa: httpx.Client,
) -> None:
    groups = _get(sa, "/groups")
    assert len(groups) == TOP_LEVEL_EXTRA + 3
    assert all("parentId" not in g and g["path"].count("/") == 1 for g in groups)
    names = [g["name"] for g in groups]
    assert names == sorted(names)


def test_groups_default_max_is_unlimited(realm_factory: RealmFactory) -> None:
    """No ``max`` means *all* top-level groups (no silent cap at 10 or 100)."""
    realm = realm_factory(groups=[f"/g-{i:03d}" for i in range(130)])
    with realm.service_account_client() as client:
        assert len(_get(client, "/groups")) == 130
        assert len(_get(client, "/groups", first=100, max=100)) == 30


def test_groups_first_max_paging(sa: httpx.Client) -> None:
    everything = [g["id"] for g in _get(sa, "/groups")]
    pages = [_get(sa, "/groups", first=first, max=10) for first in (0, 10, 20, 30)]
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert [g["id"] for page in pages for g in page] == everything


def test_listing_does_not_fill_subgroups_but_has_subgroupcount(sa: httpx.Client) -> None:
    for brief in ("true", "false"):
        llm = next(g for g in _get(sa, "/groups", briefRepresentation=brief) if g["name"] == "llm")
        assert llm["subGroupCount"] == LLM_CHILDREN
        # Present but empty (not absent): only /children tells what is below.
        assert llm["subGroups"] == []
    assert all("subGroupCount" in g for g in _get(sa, "/groups"))


def test_children_default_page_is_10_and_paging_works(
    sa: httpx.Client, facts_realm: KeycloakRealm
) -> None:
    llm = facts_realm.group_id("/llm")
    default = _get(sa, f"/groups/{llm}/children")
    assert len(default) == 10  # the trap: a walker without explicit paging loses teams
    assert len(_get(sa, f"/groups/{llm}/children", first=10, max=10)) == LLM_CHILDREN - 10
    full = _get(sa, f"/groups/{llm}/children", first=0, max=100)
    assert [c["name"] for c in full] == [f"team-{i:02d}" for i in range(LLM_CHILDREN)]
    team00 = full[0]
    assert team00["parentId"] == llm
    assert team00["path"] == "/llm/team-00"
    assert team00["subGroupCount"] == 1
    assert team00["subGroups"] == []


def test_attributes_only_in_full_representation(
    sa: httpx.Client, facts_realm: KeycloakRealm
) -> None:
    brief = next(g for g in _get(sa, "/groups") if g["name"] == "data-science")
    assert "attributes" not in brief  # briefRepresentation defaults to true on /groups
    full = next(
        g for g in _get(sa, "/groups", briefRepresentation="false") if g["name"] == "data-science"
    )
    assert full["attributes"] == {
        "litellm.sync": ["true"],
        "litellm.models": ["gpt-4o-mini"],
        "litellm.max_budget": ["50"],
    }
    # /children defaults to the full representation, so attributes are there...
    llm = facts_realm.group_id("/llm")
    children = {c["name"]: c for c in _get(sa, f"/groups/{llm}/children", max=100)}
    assert children["team-02"]["attributes"] == {"litellm.tpm_limit": ["100000"]}
    assert children["team-03"]["attributes"] == {}
    # ...unless asked for brief.
    brief_children = _get(sa, f"/groups/{llm}/children", max=100, briefRepresentation="true")
    assert all("attributes" not in c for c in brief_children)
    one = _get(sa, f"/groups/{facts_realm.group_id('/llm/team-02')}")
    assert one["attributes"] == {"litellm.tpm_limit": ["100000"]}


def test_attribute_query_returns_top_level_ancestors_with_matching_branch(
    sa: httpx.Client,
) -> None:
    """``q=key:value`` matches subgroups too, returned inside their top-level ancestor."""
    found = {g["path"]: g for g in _get(sa, "/groups", q="litellm.sync:true")}
    assert set(found) == {"/data-science", "/llm"}
    assert [s["path"] for s in found["/llm"]["subGroups"]] == ["/llm/team-01"]
    assert found["/llm"]["subGroupCount"] == LLM_CHILDREN  # the real count, not the match count


def test_count_and_group_by_path(sa: httpx.Client, facts_realm: KeycloakRealm) -> None:
    total = TOP_LEVEL_EXTRA + 3 + LLM_CHILDREN + 1
    assert _get(sa, "/groups/count") == {"count": total}  # counts subgroups too
    assert _get(sa, "/groups/count", top="true") == {"count": TOP_LEVEL_EXTRA + 3}
    nested = _get(sa, "/group-by-path/llm/team-00/nested")
    assert nested["path"] == "/llm/team-00/nested"
    assert nested["parentId"] == facts_realm.group_id(BIG_GROUP)


# --------------------------------------------------------------------- members


def test_members_default_max_100_and_paging(sa: httpx.Client, facts_realm: KeycloakRealm) -> None:
    gid = facts_realm.group_id(BIG_GROUP)
    assert len(_get(sa, f"/groups/{gid}/members")) == 100
    pages = [_get(sa, f"/groups/{gid}/members", first=f, max=50) for f in (0, 50, 100, 150)]
    assert [len(p) for p in pages] == [50, 50, 20, 0]
    names = [u["username"] for page in pages for u in page]
    assert len(set(names)) == BIG_GROUP_SIZE
    assert names == sorted(names)  # stable order by username, so offset paging is safe


def test_members_are_direct_only(sa: httpx.Client, facts_realm: KeycloakRealm) -> None:
    members = _get(sa, f"/groups/{facts_realm.group_id(BIG_GROUP)}/members", max=1000)
    assert not [u for u in members if u["username"].startswith("nested-")]
    nested = _get(sa, f"/groups/{facts_realm.group_id('/llm/team-00/nested')}/members")
    assert sorted(u["username"] for u in nested) == ["nested-0", "nested-1", "nested-2"]
    assert _get(sa, f"/groups/{facts_realm.group_id('/llm')}/members") == []


@pytest.mark.parametrize("brief", ["true", "false", None])
def test_member_representation_includes_enabled_and_disabled_users(
    sa: httpx.Client, facts_realm: KeycloakRealm, brief: str | None
) -> None:
    params = {"max": 1000} | ({"briefRepresentation": brief} if brief else {})
    members = _get(sa, f"/groups/{facts_realm.group_id(BIG_GROUP)}/members", **params)
    assert len(members) == BIG_GROUP_SIZE  # the disabled user is still listed
    assert all({"id", "username", "email", "enabled"} <= set(u) for u in members)
    assert [u["username"] for u in members if not u["enabled"]] == [DISABLED]
    sample = next(u for u in members if u["username"] == "member-001")
    assert sample["firstName"] == "Member" and sample["lastName"] == "No1"
    if brief == "true":
        assert set(sample) == {
            "id", "username", "firstName", "lastName", "email",
            "emailVerified", "enabled", "createdTimestamp",
        }  # fmt: skip


def test_service_account_user_is_not_a_member(sa: httpx.Client, facts_realm: KeycloakRealm) -> None:
    sa_id = facts_realm.service_account_user_id()
    assert _get(sa, f"/users/{sa_id}/groups") == []
    for path in (BIG_GROUP, "/llm/team-01", "/data-science"):
        members = _get(sa, f"/groups/{facts_realm.group_id(path)}/members", max=1000)
        assert not [u for u in members if u["username"].startswith("service-account-")]
    # Plain /users listings hide service accounts, an exact username search does not.
    listed = _get(sa, "/users", max=1000)
    assert not [u for u in listed if u["username"].startswith("service-account-")]
    assert [u["id"] for u in _get(sa, "/users", username="service-account-syncd")] == [sa_id]


# --------------------------------------------------------------------- roles and auth


def _sa_status(realm: KeycloakRealm) -> dict[str, tuple[int, Any]]:
    with realm.service_account_client() as client:
        llm = realm.group_id("/llm")
        team = realm.group_id("/llm/team")
        paths = {
            "groups": "/groups",
            "count": "/groups/count",
            "group": f"/groups/{llm}",
            "children": f"/groups/{llm}/children",
            "members": f"/groups/{team}/members",
        }
        result = {}
        for key, path in paths.items():
            response = client.get(path)
            result[key] = (response.status_code, response.json())
        return result


def test_view_users_is_enough(realm_factory: RealmFactory) -> None:
    realm = realm_factory(
        groups=["/llm/team"], users=[User("u1", groups=["/llm/team"])],
        service_account_roles=("view-users",),
    )  # fmt: skip
    status = _sa_status(realm)
    assert {k: code for k, (code, _) in status.items()} == dict.fromkeys(status, 200)
    assert [u["username"] for u in status["members"][1]] == ["u1"]


def test_query_groups_alone_lists_nothing_and_forbids_the_rest(
    realm_factory: RealmFactory,
) -> None:
    realm = realm_factory(
        groups=["/llm/team"], users=[User("u1", groups=["/llm/team"])],
        service_account_roles=("query-groups",),
    )  # fmt: skip
    status = _sa_status(realm)
    assert status["groups"] == (200, [])  # silently empty: looks like "no groups at all"
    assert status["count"] == (200, {"count": 2})  # ...while the count tells the truth
    for key in ("group", "children", "members"):
        assert status[key][0] == 403


@pytest.mark.parametrize("roles", [(), ("query-users",)])
def test_without_view_users_everything_is_403(
    realm_factory: RealmFactory, roles: tuple[str, ...]
) -> None:
    realm = realm_factory(groups=["/llm/team"], service_account_roles=roles)
    status = _sa_status(realm)
    assert {k: code for k, (code, _) in status.items()} == dict.fromkeys(status, 403)
    assert status["groups"][1] == {"error": "HTTP 403 Forbidden"}


def test_removing_view_users_takes_effect_at_once_even_for_issued_tokens(
    realm_factory: RealmFactory,
) -> None:
    """The admin API checks the service account's *current* role mappings, not the JWT."""
    realm = realm_factory(groups=["/llm/team"])
    with realm.service_account_client() as old:
        assert old.get("/groups").status_code == 200
        realm.remove_service_account_role("view-users")
        assert old.get("/groups").status_code == 403  # same token, now forbidden
        realm.add_service_account_role("view-users")
        assert old.get("/groups").status_code == 200  # and allowed again


def test_wrong_secret_is_401_from_token_endpoint(facts_realm: KeycloakRealm) -> None:
    response = httpx.post(
        facts_realm.token_url,
        data={"grant_type": "client_credentials", "client_id": "syncd", "client_secret": "nope"},
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized_client",
        "error_description": "Invalid client or Invalid client credentials",
    }
    unknown = httpx.post(
        facts_realm.token_url,
        data={"grant_type": "client_credentials", "client_id": "ghost", "client_secret": "x"},
    )
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"
    no_realm = httpx.post(
        f"{facts_realm.url}/realms/no-such-realm/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": "syncd", "client_secret": "x"},
    )
    assert no_realm.status_code == 404
    assert no_realm.json() == {"error": "Realm does not exist"}


def test_service_account_token_shape(facts_realm: KeycloakRealm) -> None:
    response = httpx.post(
        facts_realm.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": facts_realm.client_id,
            "client_secret": facts_realm.client_secret,
        },
    )
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300  # realm default accessTokenLifespan
    assert "refresh_token" not in body  # client credentials: re-authenticate, no refresh


# --------------------------------------------------------------------- admin events


def test_admin_events_need_view_events_and_log_membership(realm_factory: RealmFactory) -> None:
    realm = realm_factory(
        groups=["/llm/team", "/other"],
        users=[User("u1"), *(User(f"o{i}", groups=["/other"]) for i in range(3))],
    )
    realm.enable_admin_events()
    realm.add_user_to_group("u1", "/llm/team")
    realm.remove_user_from_group("u1", "/llm/team")
    other = realm.group_id("/other")
    realm.delete_group("/other")  # 3 members: still a single event
    u2 = realm.create_user("user2", groups=["/llm/team"])  # membership given at creation
    with realm.service_account_client() as client:
        assert client.get("/admin-events").status_code == 403  # view-users is not enough
    realm.add_service_account_role("view-events")
    uid, gid = realm.user_id("u1"), realm.group_id("/llm/team")
    with realm.service_account_client() as client:
        events = _get(client, "/admin-events", resourceTypes=["GROUP_MEMBERSHIP", "GROUP", "USER"])
    summary = [(e["resourceType"], e["operationType"], e["resourcePath"]) for e in events]
    assert summary == [  # newest first
        ("USER", "CREATE", f"users/{u2}"),  # no GROUP_MEMBERSHIP event for u2's group
        ("GROUP", "DELETE", f"groups/{other}"),
        ("GROUP_MEMBERSHIP", "DELETE", f"users/{uid}/groups/{gid}"),
        ("GROUP_MEMBERSHIP", "CREATE", f"users/{uid}/groups/{gid}"),
    ]


# --------------------------------------------------------------------- fixture helpers


def test_mutation_helpers(realm_factory: RealmFactory) -> None:
    """The helpers other tests use to change Keycloak under syncd really do so."""
    realm = realm_factory(
        groups={"/llm/a": {"litellm.models": "gpt-4o"}, "/llm/b": None},
        users=[User("alice", groups=["/llm/a"]), User("bob")],
    )
    assert set(realm.group_ids()) == {"/llm", "/llm/a", "/llm/b"}
    assert set(realm.user_ids()) == {"alice", "bob"}  # no service account in listings
    realm.rename_group("/llm/a", "a2")
    realm.create_group("/llm/a2/sub", {"k": ["v"]})
    realm.add_user_to_group("bob", "/llm/a2/sub")
    realm.remove_user_from_group("alice", "/llm/a2")
    realm.disable_user("alice")
    realm.delete_group("/llm/b")
    realm.create_user("carol", email="carol@example.test", groups=["/llm/a2"])
    admin, name = realm.admin, realm.name
    assert set(realm.group_ids()) == {"/llm", "/llm/a2", "/llm/a2/sub"}
    a2 = admin.group(name, realm.group_id("/llm/a2"))
    assert a2["attributes"] == {"litellm.models": ["gpt-4o"]}  # rename keeps attributes
    members = admin.get(f"/admin/realms/{name}/groups/{a2['id']}/members")
    assert [u["username"] for u in members] == ["carol"]
    alice = admin.get(f"/admin/realms/{name}/users/{realm.user_id('alice')}")
    assert alice["enabled"] is False
    realm.enable_user("alice")
    realm.delete_user("bob")
    assert set(realm.user_ids()) == {"alice", "carol"}
    realm.set_group_attributes("/llm/a2", {"litellm.models": ["x", "y"]})
    assert admin.group(name, a2["id"])["attributes"] == {"litellm.models": ["x", "y"]}


# --------------------------------------------------------------------- python-keycloak 7.1.1


async def test_python_keycloak_client_credentials_token(facts_realm: KeycloakRealm) -> None:
    openid = KeycloakOpenID(
        server_url=facts_realm.url,
        realm_name=facts_realm.name,
        client_id=facts_realm.client_id,
        client_secret_key=facts_realm.client_secret,
    )
    token = await openid.a_token(grant_type="client_credentials")
    assert token["access_token"]
    assert token["expires_in"] == 300


async def test_python_keycloak_bad_secret_raises_authentication_error(
    facts_realm: KeycloakRealm,
) -> None:
    openid = KeycloakOpenID(
        server_url=facts_realm.url,
        realm_name=facts_realm.name,
        client_id=facts_realm.client_id,
        client_secret_key="wrong",
    )
    with pytest.raises(KeycloakAuthenticationError) as info:
        await openid.a_token(grant_type="client_credentials")
    assert info.value.response_code == 401
    assert isinstance(info.value.error_message, bytes)  # raw body bytes, not a str
    assert b"unauthorized_client" in info.value.error_message
    with pytest.raises(KeycloakAuthenticationError):
        openid.token(grant_type="client_credentials")


async def test_python_keycloak_unreachable_raises_connection_error() -> None:
    openid = KeycloakOpenID(
        server_url=f"http://127.0.0.1:{free_port()}",
        realm_name="any",
        client_id="syncd",
        client_secret_key="x",
    )
    with pytest.raises(KeycloakConnectionError) as info:
        await openid.a_token(grant_type="client_credentials")
    assert info.value.response_code is None
    assert info.value.error_message == "Can't connect to server"
    with pytest.raises(KeycloakConnectionError):
        openid.token(grant_type="client_credentials")


def _admin(realm: KeycloakRealm) -> KeycloakAdmin:
    connection = KeycloakOpenIDConnection(
        server_url=realm.url,
        realm_name=realm.name,
        client_id=realm.client_id,
        client_secret_key=realm.client_secret,
    )
    return KeycloakAdmin(connection=connection)


async def test_python_keycloak_admin_pages_members_and_children(
    facts_realm: KeycloakRealm,
) -> None:
    admin = _admin(facts_realm)
    gid = facts_realm.group_id(BIG_GROUP)
    assert len(admin.get_group_members(gid)) == BIG_GROUP_SIZE  # pages 100 at a time
    assert len(await admin.a_get_group_members(gid)) == BIG_GROUP_SIZE
    llm = facts_realm.group_id("/llm")
    assert len(admin.get_group_children(llm)) == LLM_CHILDREN  # fetch-all, not the 10 default
    groups = {g["path"]: g for g in admin.get_groups()}
    assert len(groups["/llm"]["subGroups"]) == LLM_CHILDREN
    assert groups["/llm"]["subGroups"][0]["subGroups"] == []  # one level unless full_hierarchy
    full = {g["path"]: g for g in admin.get_groups(full_hierarchy=True)}
    assert [s["path"] for s in full["/llm"]["subGroups"][0]["subGroups"]] == ["/llm/team-00/nested"]
    await admin.connection.aclose()


def test_python_keycloak_get_groups_query_bug(realm_factory: RealmFactory) -> None:
    """7.1.1 leaks the top-level ``first``/``max`` into child fetches when a query is given."""
    realm = realm_factory(
        groups=[f"/g-{i:03d}" for i in range(101)] + [f"/zz/c{i:03d}" for i in range(3)]
    )
    admin = _admin(realm)
    good = {g["path"]: g for g in admin.get_groups()}
    assert len(good["/zz"]["subGroups"]) == 3
    bad = {g["path"]: g for g in admin.get_groups(query={"briefRepresentation": "false"})}
    assert bad["/zz"]["subGroupCount"] == 3
    assert bad["/zz"]["subGroups"] == []  # fetched with first=100: children silently lost
    with pytest.raises(ValueError, match="Cannot use both query and full_hierarchy"):
        admin.get_groups(query={"briefRepresentation": "false"}, full_hierarchy=True)


def test_python_keycloak_missing_role_is_get_error_403(realm_factory: RealmFactory) -> None:
    realm = realm_factory(groups=["/llm/team"], service_account_roles=("query-groups",))
    admin = _admin(realm)
    assert admin.get_groups() == []
    with pytest.raises(KeycloakGetError) as info:
        admin.get_group_members(realm.group_id("/llm/team"))
    assert info.value.response_code == 403
    assert isinstance(info.value, KeycloakError)
