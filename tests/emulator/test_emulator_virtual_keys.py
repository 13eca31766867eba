"""Virtual keys on real routes: auth order, ``/key/info``, models, completions, role checks.

Every expectation is read off litellm 1.110.2 (see the emulator README for
the file and function of each rule). The calls are bearer calls a client
would make; the master key only seeds the tables.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.litellm_emulator.auth import hash_token
from devtools.litellm_emulator.core import DEFAULT_MODELS
from devtools.litellm_emulator.llm import CANNED_REPLY

MODEL = DEFAULT_MODELS[0]
OTHER_MODEL = DEFAULT_MODELS[1]


def _as(emulator: EmulatorAdmin, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=emulator.url,
        headers={"Authorization": f"Bearer {key}", "litellm-changed-by": "test"},
        timeout=10,
    )


def _user_key(
    emulator: EmulatorAdmin, user_id: str, role: str = "internal_user", **key_fields: Any
) -> str:
    emulator.create_user(user_id, user_role=role)
    key: str = emulator.generate_key(user_id=user_id, **key_fields)["key"]
    return key


def _chat(
    client: httpx.Client, model: str = MODEL, path: str = "/chat/completions"
) -> httpx.Response:
    return client.post(path, json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def _err(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# -- client routes ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/chat/completions", "/v1/chat/completions"])
def test_a_key_gets_a_canned_completion(emulator: EmulatorAdmin, path: str) -> None:
    key = _user_key(emulator, "alice")
    with _as(emulator, key) as client:
        response = _chat(client, path=path)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    assert body["choices"][0]["message"] == {"role": "assistant", "content": CANNED_REPLY}


@pytest.mark.parametrize("path", ["/v1/models", "/models"])
def test_models_lists_every_model_for_an_unrestricted_key(
    emulator: EmulatorAdmin, path: str
) -> None:
    key = _user_key(emulator, "alice")
    with _as(emulator, key) as client:
        response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {
        "data": [
            {"id": m, "object": "model", "created": 1677610602, "owned_by": "openai"}
            for m in DEFAULT_MODELS
        ],
        "object": "list",
    }


def test_models_lists_the_keys_models_else_the_teams(emulator: EmulatorAdmin) -> None:
    emulator.create_team("t1", "T1", models=[OTHER_MODEL])
    restricted = _user_key(emulator, "alice", models=[MODEL])
    team_key = emulator.generate_key(user_id="alice", team_id="t1")["key"]
    with _as(emulator, restricted) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [MODEL]
    with _as(emulator, team_key) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [OTHER_MODEL]


def test_key_model_access_is_403_key_model_access_denied(emulator: EmulatorAdmin) -> None:
    key = _user_key(emulator, "alice", models=[MODEL])
    with _as(emulator, key) as client:
        response = _chat(client, OTHER_MODEL)
    assert response.status_code == 403
    assert _err(response) == {
        "message": f"The requested model '{OTHER_MODEL}' is not available for this API key, "
        "or the model name is invalid. Check the models available to you and try again.",
        "type": "key_model_access_denied",
        "param": "model",
        "code": "403",
    }


def test_team_model_access_is_403_team_model_access_denied(emulator: EmulatorAdmin) -> None:
    emulator.create_team("t1", "T1", models=[MODEL])
    emulator.create_user("alice")
    key = emulator.generate_key(user_id="alice", team_id="t1")["key"]
    with _as(emulator, key) as client:
        assert _chat(client, MODEL).status_code == 200
        response = _chat(client, OTHER_MODEL)
    assert response.status_code == 403
    assert (_err(response)["type"], _err(response)["param"]) == (
        "team_model_access_denied",
        "model",
    )


def test_a_model_the_proxy_does_not_serve_is_400(emulator: EmulatorAdmin) -> None:
    key = _user_key(emulator, "alice")
    with _as(emulator, key) as client:
        response = _chat(client, "gpt-nonexistent")
    assert response.status_code == 400
    assert "Invalid model name passed in model=gpt-nonexistent" in _err(response)["message"]


# -- the order of the auth checks, on a real route ---------------------------------


def test_unknown_and_deleted_keys_are_401_token_not_found(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    key = _user_key(emulator, "alice")
    api.post("/key/delete", json={"keys": [key]})
    for dead in (key, "sk-never-issued-0000"):
        with _as(emulator, dead) as client:
            response = client.get("/v1/models")
        assert response.status_code == 401
        assert _err(response) == {
            "message": "Authentication Error, Invalid API key provided.",
            "type": "token_not_found_in_db",
            "param": "key",
            "code": "401",
        }


def test_blocked_key_wins_over_every_later_check(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    emulator.create_team("t1", "T1")
    emulator.create_user("alice")
    key = emulator.generate_key(user_id="alice", team_id="t1", models=[MODEL])["key"]
    api.post("/user/update", json={"user_id": "alice", "metadata": {"scim_active": False}})
    api.post("/team/block", json={"team_id": "t1"})
    api.post("/key/block", json={"key": key})
    with _as(emulator, key) as client:
        response = _chat(client, OTHER_MODEL)
    assert response.status_code == 401
    assert _err(response)["message"] == (
        "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."
    )


def test_key_model_access_comes_before_the_owners_scim_switch(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    """``validate_resolved_virtual_key`` checks key models right after ``blocked``."""
    key = _user_key(emulator, "alice", models=[MODEL])
    api.post("/user/update", json={"user_id": "alice", "metadata": {"scim_active": False}})
    with _as(emulator, key) as client:
        assert _err(_chat(client, OTHER_MODEL))["type"] == "key_model_access_denied"
        response = _chat(client, MODEL)
    assert response.status_code == 401
    assert _err(response)["message"] == (
        "Authentication Error, User=alice has been deactivated via SCIM. "
        "Keys owned by this user cannot be used."
    )


def test_scim_switch_comes_before_expiry(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.create_user("bob")
    expired = emulator.generate_key(user_id="bob")["key"]
    api.post("/key/update", json={"key": expired, "duration": "0s"})
    with _as(emulator, expired) as client:
        response = client.get("/v1/models")
    assert response.status_code == 401
    assert _err(response)["type"] == "expired_key"
    assert _err(response)["param"] == f"sk-...{hash_token(expired)[-4:]}"
    api.post("/user/update", json={"user_id": "bob", "metadata": {"scim_active": False}})
    with _as(emulator, expired) as client:
        assert "deactivated via SCIM" in _err(client.get("/v1/models"))["message"]


def test_expiry_comes_before_the_blocked_team(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.create_team("t1", "T1")
    emulator.create_user("alice")
    key = emulator.generate_key(user_id="alice", team_id="t1")["key"]
    api.post("/team/block", json={"team_id": "t1"})
    with _as(emulator, key) as client:
        response = client.get("/v1/models")
        assert response.status_code == 401
        assert _err(response)["message"].startswith("Authentication Error, Team=t1 is blocked.")
        api.post("/key/update", json={"key": key, "duration": "0s"})
        assert _err(client.get("/v1/models"))["type"] == "expired_key"


def test_blocked_team_comes_before_team_model_access(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    emulator.create_team("t1", "T1", models=[MODEL])
    emulator.create_user("alice")
    key = emulator.generate_key(user_id="alice", team_id="t1")["key"]
    api.post("/team/block", json={"team_id": "t1"})
    with _as(emulator, key) as client:
        response = _chat(client, OTHER_MODEL)
    assert response.status_code == 401
    assert "Team=t1 is blocked" in _err(response)["message"]


def test_member_delete_cuts_the_members_team_key_on_a_real_route(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    emulator.create_team("t1", "T1")
    emulator.add_member("t1", "alice", "user")
    key = emulator.generate_key(user_id="alice", team_id="t1")["key"]
    with _as(emulator, key) as client:
        assert _chat(client).status_code == 200
        api.post("/team/member_delete", json={"team_id": "t1", "user_id": "alice"})
        assert _chat(client).status_code == 401


# -- /key/info -------------------------------------------------------------------


def test_key_info_without_a_key_is_the_callers_own_key(emulator: EmulatorAdmin) -> None:
    key = _user_key(emulator, "alice", key_alias="alice-laptop")
    with _as(emulator, key) as client:
        response = client.get("/key/info")
    assert response.status_code == 200
    body = response.json()
    assert body["key"] == hash_token(key)  # the hash, never the secret
    assert key not in response.text
    assert (body["info"]["user_id"], body["info"]["key_alias"]) == ("alice", "alice-laptop")
    assert body["info"]["status"] == "active"
    assert "token" not in body["info"]


def test_key_info_for_the_master_key_is_404(emulator: EmulatorAdmin) -> None:
    """The master key is no DB row: ``api_key`` is the alias ``litellm_proxy_master_key``."""
    with _as(emulator, emulator.master_key) as client:
        response = client.get("/key/info")
    assert response.status_code == 404
    assert _err(response) == {
        "message": "Key not found in database",
        "type": "not_found_error",
        "param": "key",
        "code": "404",
    }


def test_key_info_of_someone_elses_key_is_403_for_an_internal_user(
    emulator: EmulatorAdmin,
) -> None:
    mine = _user_key(emulator, "alice")
    theirs = _user_key(emulator, "bob")
    with _as(emulator, mine) as client:
        response = client.get("/key/info", params={"key": hash_token(theirs)})
    assert response.status_code == 403
    assert _err(response)["message"] == (
        "You are not allowed to access this key's info. Your role=internal_user"
    )
    assert _err(response)["type"] == "auth_error"


# -- role checks on management routes ----------------------------------------------

SYNCD_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/team/new", {"team_id": "t9", "team_alias": "T9", "metadata": {"m": 1}}),
    ("POST", "/team/update", {"team_id": "t9", "metadata": {"m": 2}}),
    ("POST", "/user/new", {"user_id": "u9", "auto_create_key": False}),
    ("POST", "/team/member_add", {"team_id": "t9", "member": {"user_id": "u9", "role": "user"}}),
    ("POST", "/user/update", {"user_id": "u9", "metadata": {"scim_active": False}}),
    ("GET", "/user/list", None),
    ("GET", "/v2/team/list", None),
    ("GET", "/key/list?return_full_object=true", None),
    ("POST", "/key/update", {"key": "sk-victim-key-000000", "metadata": {"syncd_blocked": True}}),
    ("POST", "/key/block", {"key": "sk-victim-key-000000"}),
    ("POST", "/key/unblock", {"key": "sk-victim-key-000000"}),
    ("POST", "/team/member_delete", {"team_id": "t9", "user_id": "u9"}),
    ("POST", "/team/block", {"team_id": "t9"}),
    ("POST", "/team/unblock", {"team_id": "t9"}),
    ("POST", "/key/delete", {"keys": ["sk-victim-key-000000"]}),
    ("POST", "/user/delete", {"user_ids": ["u9"]}),
    ("POST", "/team/delete", {"team_ids": ["t9"]}),
]


def test_a_proxy_admin_key_may_do_everything_syncd_does(emulator: EmulatorAdmin) -> None:
    admin_key = _user_key(emulator, "svc-syncd", role="proxy_admin")
    emulator.create_user("victim")
    emulator.generate_key(user_id="victim", key="sk-victim-key-000000")
    with _as(emulator, admin_key) as client:
        for method, path, body in SYNCD_CALLS:
            response = client.request(method, path, json=body)
            assert response.status_code == 200, (path, response.text)
    audit = emulator.audit()
    assert {a["changed_by"] for a in audit if a["path"] in ("/team/new", "/user/delete")} == {
        "test"
    }


def test_team_new_with_a_proxy_admin_key_adds_the_keys_own_user(
    emulator: EmulatorAdmin,
) -> None:
    admin_key = _user_key(emulator, "svc-syncd", role="proxy_admin")
    with _as(emulator, admin_key) as client:
        team = client.post("/team/new", json={"team_id": "t1"}).json()
    assert team["members_with_roles"] == [
        {"user_id": "svc-syncd", "user_email": None, "role": "admin"}
    ]
    state = emulator.state()
    assert "default_user_id" not in {u["user_id"] for u in state["users"]}
    assert ("svc-syncd", "t1") in {(m["user_id"], m["team_id"]) for m in state["memberships"]}


def test_disable_auto_add_applies_to_a_proxy_admin_key_too(emulator: EmulatorAdmin) -> None:
    admin_key = _user_key(emulator, "svc-syncd", role="proxy_admin")
    emulator.settings(auto_add_proxy_admin=False)
    with _as(emulator, admin_key) as client:
        team = client.post("/team/new", json={"team_id": "t1"}).json()
    assert team["members_with_roles"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/team/new", {"team_id": "t2"}),
        ("POST", "/team/block", {"team_id": "t1"}),
        ("POST", "/team/unblock", {"team_id": "t1"}),
        ("POST", "/team/delete", {"team_ids": ["t1"]}),
        ("PATCH", "/team/t1", {"metadata": {}}),
        ("POST", "/user/new", {"user_id": "x"}),
        ("POST", "/user/update", {"user_id": "alice-internal", "user_role": "proxy_admin"}),
        ("POST", "/user/delete", {"user_ids": ["x"]}),
    ],
)
def test_an_internal_users_key_is_401_on_admin_only_routes(
    emulator: EmulatorAdmin, method: str, path: str, body: dict[str, Any]
) -> None:
    emulator.create_team("t1", "T1")
    key = _user_key(emulator, "alice-internal")
    with _as(emulator, key) as client:
        response = client.request(method, path, json=body)
    template = "/team/{team_id}" if method == "PATCH" else path
    assert response.status_code == 401
    assert _err(response) == {
        "message": "Authentication Error, Only proxy admin can be used to generate, delete, "
        f"update info for new keys/users/teams. Route={template}. Your role=internal_user. "
        "Your user_id=alice-******al",
        "type": "auth_error",
        "param": None,
        "code": "401",
    }
    assert [a["status"] for a in emulator.audit() if a["changed_by"] == "test"] == [401]
    assert [(t["team_id"], t["blocked"]) for t in emulator.state()["teams"]] == [("t1", False)]


@pytest.mark.parametrize(
    ("path", "body", "route"),
    [
        (
            "/team/member_add",
            {"team_id": "t1", "member": {"user_id": "x", "role": "user"}},
            "/team/member_add",
        ),
        ("/team/member_delete", {"team_id": "t1", "user_id": "bob"}, "/team/member_delete"),
        # 1.110.2's member_update names /team/member_delete in its refusal
        (
            "/team/member_update",
            {"team_id": "t1", "user_id": "bob", "role": "user"},
            "/team/member_delete",
        ),
    ],
)
def test_an_internal_user_who_is_not_team_admin_is_403_on_membership_routes(
    emulator: EmulatorAdmin, path: str, body: dict[str, Any], route: str
) -> None:
    emulator.create_team("t1", "T1")
    emulator.add_member("t1", "bob", "user")
    key = _user_key(emulator, "alice")
    with _as(emulator, key) as client:
        response = client.post(path, json=body)
    assert response.status_code == 403
    assert response.json() == {
        "detail": {
            "error": "Call not allowed. User not proxy admin OR team admin. "
            f"route={route}, team_id=t1"
        }
    }
    assert "x" not in {u["user_id"] for u in emulator.state()["users"]}


def test_an_internal_user_who_is_team_admin_may_manage_members(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    emulator.settings(licensed=True)
    emulator.create_team("t1", "T1")
    emulator.create_user("alice")
    api.post(
        "/team/member_add", json={"team_id": "t1", "member": {"user_id": "alice", "role": "admin"}}
    )
    key = emulator.generate_key(user_id="alice")["key"]
    with _as(emulator, key) as client:
        add = client.post(
            "/team/member_add", json={"team_id": "t1", "member": {"user_id": "bob", "role": "user"}}
        )
    assert add.status_code == 200


def test_an_internal_user_is_403_on_team_update_and_user_list(emulator: EmulatorAdmin) -> None:
    emulator.create_team("t1", "T1")
    key = _user_key(emulator, "alice")
    with _as(emulator, key) as client:
        update = client.post("/team/update", json={"team_id": "t1", "metadata": {}})
        users = client.get("/user/list")
    assert update.status_code == 403
    assert _err(update) == {
        "message": "You do not have access to this team",
        "type": "auth_error",
        "param": None,
        "code": "403",
    }
    assert users.status_code == 403
    assert users.json() == {
        "detail": {"error": "Only proxy admins and organization admins can list users."}
    }


def test_an_internal_user_sees_only_their_own_user_and_teams(emulator: EmulatorAdmin) -> None:
    emulator.create_team("t1", "T1")
    emulator.create_team("t2", "T2")
    emulator.add_member("t1", "alice", "user")
    emulator.add_member("t2", "bob", "user")
    key = emulator.generate_key(user_id="alice")["key"]
    with _as(emulator, key) as client:
        me = client.get("/user/info")
        other = client.get("/user/info", params={"user_id": "bob"})
        mine = client.get("/v2/team/list")
        theirs = client.get("/v2/team/list", params={"user_id": "bob"})
    assert me.status_code == 200
    assert me.json()["user_id"] == "alice"
    assert other.status_code == 403
    assert _err(other) == {
        "message": "key not allowed to access this user's info. user_id=bob, key's user_id=alice",
        "type": "auth_error",
        "param": None,
        "code": "403",
    }
    assert [t["team_id"] for t in mine.json()["teams"]] == ["t1"]
    assert theirs.status_code == 401
    assert theirs.json() == {
        "detail": {
            "error": "Only admin users can query all teams/other teams. "
            "Your user role=internal_user"
        }
    }


def test_emulator_admin_routes_refuse_even_a_proxy_admin_key(emulator: EmulatorAdmin) -> None:
    admin_key = _user_key(emulator, "svc-syncd", role="proxy_admin")
    with _as(emulator, admin_key) as client:
        assert client.get("/_emulator/state").status_code == 401
        assert client.post("/_emulator/auth_check", json={"key": admin_key}).status_code == 401


def test_clear_audit_forgets_the_writes_and_keeps_the_tables(emulator: EmulatorAdmin) -> None:
    _user_key(emulator, "svc-syncd", role="proxy_admin")
    assert emulator.audit()
    emulator.clear_audit()
    assert emulator.audit() == []
    assert "svc-syncd" in {u["user_id"] for u in emulator.state()["users"]}
