"""User endpoints: success and documented error cases, status codes and body shapes."""

from __future__ import annotations

import hashlib

import httpx

from devtools.litellm_emulator.admin import EmulatorAdmin
from tests.emulator.test_emulator_teams import e1, e2


def test_user_new_auto_creates_a_personal_key_by_default(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    response = api.post(
        "/user/new", json={"user_id": "alice", "user_email": "alice@x.io", "metadata": {"k": "v"}}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "alice"
    assert body["user_email"] == "alice@x.io"
    assert body["key"].startswith("sk-")
    keys = emulator.state()["keys"]
    assert len(keys) == 1
    assert keys[0]["token"] == hashlib.sha256(body["key"].encode()).hexdigest()
    assert keys[0]["user_id"] == "alice" and keys[0]["team_id"] is None


def test_user_new_without_key(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    body = api.post("/user/new", json={"user_id": "bob", "auto_create_key": False}).json()
    assert body["key"] == ""
    assert body["teams"] is None
    assert emulator.state()["keys"] == []
    generated = api.post("/user/new", json={"auto_create_key": False}).json()
    assert len(generated["user_id"]) == 36


def test_user_new_with_team_joins_it_and_swallows_failures(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    api.post("/team/new", json={"team_id": "t1"})
    body = api.post(
        "/user/new", json={"user_id": "c", "team_id": "t1", "auto_create_key": False}
    ).json()
    assert body["teams"] == ["t1"]
    missing = api.post(
        "/user/new", json={"user_id": "d", "teams": ["nope"], "auto_create_key": False}
    )
    assert missing.status_code == 200
    assert missing.json()["teams"] == []
    assert emulator.state()["consistency_problems"] == []


def test_user_new_duplicates_are_409(api: httpx.Client) -> None:
    api.post(
        "/user/new", json={"user_id": "alice", "user_email": "Alice@X.io", "auto_create_key": False}
    )
    dup_id = e1(api.post("/user/new", json={"user_id": "alice"}), 409)
    assert dup_id["message"] == "{'error': 'User with id alice already exists'}"
    dup_email = e1(
        api.post("/user/new", json={"user_id": "other", "user_email": "alice@x.io"}), 409
    )
    assert dup_email["message"] == "{'error': 'User with email Alice@X.io already exists'}"


def test_user_new_invalid_role_is_422(api: httpx.Client) -> None:
    e2(api.post("/user/new", json={"user_role": "team"}), 422)
    e2(api.post("/user/new", json={"auto_create_key": "maybe"}), 422)


def test_user_info(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    api.post(
        "/team/new",
        json={
            "team_id": "t1",
            "team_alias": "One",
            "members_with_roles": [{"user_id": "a", "role": "user"}],
        },
    )
    emulator.generate_key(user_id="a", team_id="t1")
    emulator.generate_key(user_id="a")
    body = api.get("/user/info", params={"user_id": "a"}).json()
    assert set(body) >= {"user_id", "user_info", "keys", "teams"}
    assert body["user_info"]["teams"] == ["t1"]
    assert [t["team_id"] for t in body["teams"]] == ["t1"]
    assert sorted(str(k["team_alias"]) for k in body["keys"]) == ["None", "One"]


def test_user_info_unknown_is_404_e1(api: httpx.Client) -> None:
    error = e1(api.get("/user/info", params={"user_id": "ghost"}), 404)
    assert error["message"] == "User ghost not found"


def test_user_info_without_user_id_is_the_admin_view(api: httpx.Client) -> None:
    api.post("/team/new", json={"team_id": "t1"})
    body = api.get("/user/info").json()
    assert body["user_id"] == "default_user_id"
    assert [t["team_id"] for t in body["teams"]] == ["t1"]


def test_user_list_single_user_ids_is_a_substring_match(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    for uid in ("alice", "malice", "ALICE2", "bob"):
        emulator.create_user(uid)
    single = api.get("/user/list", params={"user_ids": "alice"}).json()
    assert sorted(u["user_id"] for u in single["users"]) == ["ALICE2", "alice", "malice"]
    exact = api.get("/user/list", params={"user_ids": "alice,bob"}).json()
    assert sorted(u["user_id"] for u in exact["users"]) == ["alice", "bob"]


def test_user_list_shape_order_and_filters(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    api.post(
        "/team/new",
        json={"team_id": "t1", "members_with_roles": [{"user_id": "u1", "role": "user"}]},
    )
    emulator.create_user("u2", user_email="two@x.io", user_role="proxy_admin")
    emulator.generate_key(user_id="u2")
    body = api.get("/user/list").json()
    assert set(body) == {"users", "total", "page", "page_size", "total_pages"}
    assert (body["page"], body["page_size"]) == (1, 25)
    assert [u["user_id"] for u in body["users"]] == ["u2", "default_user_id", "u1"]  # newest first
    assert body["users"][0]["key_count"] == 1
    assert [u["user_id"] for u in api.get("/user/list", params={"team": "t1"}).json()["users"]] == [
        "default_user_id",
        "u1",
    ]
    assert [
        u["user_id"] for u in api.get("/user/list", params={"user_email": "TWO"}).json()["users"]
    ] == ["u2"]
    assert [
        u["user_id"] for u in api.get("/user/list", params={"role": "proxy_admin"}).json()["users"]
    ] == ["u2"]
    paged = api.get("/user/list", params={"page_size": 2, "page": 2}).json()
    assert (paged["total"], paged["total_pages"], len(paged["users"])) == (3, 2, 1)


def test_user_list_page_size_cap_and_sort_errors(api: httpx.Client) -> None:
    assert api.get("/user/list", params={"page_size": 100}).status_code == 200
    e2(api.get("/user/list", params={"page_size": 101}), 422)
    detail = e2(api.get("/user/list", params={"sort_by": "shoe_size"}), 400)
    assert detail["error"].startswith("Invalid sort column.")


def test_user_update_replaces_metadata(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.create_user("a", metadata={"x": 1, "scim_active": True})
    response = api.post(
        "/user/update", json={"user_id": "a", "metadata": {"y": 2}, "user_alias": "Ann"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "a"
    assert body["data"]["metadata"] == {"y": 2}
    assert body["data"]["user_alias"] == "Ann"


def test_user_update_empty_metadata_keeps_the_stored_one(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    emulator.create_user("a", metadata={"x": 1})
    body = api.post("/user/update", json={"user_id": "a", "metadata": {}}).json()
    assert body["data"]["metadata"] == {"x": 1}


def test_user_update_ignores_teams_and_upserts_unknown_user(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    body = api.post(
        "/user/update", json={"user_id": "new", "teams": ["t1"], "max_budget": 3}
    ).json()
    assert body["user_id"] == "new"
    assert body["data"]["teams"] == [] and body["data"]["max_budget"] == 3
    assert "new" in {u["user_id"] for u in emulator.state()["users"]}


def test_user_update_by_email(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.create_user("a", user_email="a@x.io")
    body = api.post("/user/update", json={"user_email": "a@x.io", "user_alias": "A"}).json()
    assert body["user_id"] == "a" and body["data"]["user_alias"] == "A"


def test_user_update_errors(api: httpx.Client) -> None:
    e2(api.post("/user/update", json={"metadata": {"a": 1}}), 422)
    error = e1(api.post("/user/update", json={"user_id": "a", "budget_duration": "soon"}), 400)
    assert "Invalid budget_duration" in error["message"]


def test_user_delete_removes_keys_and_memberships(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    api.post(
        "/team/new",
        json={"team_id": "t1", "members_with_roles": [{"user_id": "a", "role": "user"}]},
    )
    key = emulator.generate_key(user_id="a", team_id="t1")
    emulator.generate_key(user_id="a")
    response = api.post("/user/delete", json={"user_ids": ["a"]})
    assert response.status_code == 200
    assert response.json() == 1
    state = emulator.state()
    assert "a" not in {u["user_id"] for u in state["users"]}
    assert state["keys"] == []
    assert [m["user_id"] for m in state["teams"][0]["members_with_roles"]] == ["default_user_id"]
    assert state["consistency_problems"] == []
    # user delete does not archive keys: /key/info says not found, not "deleted"
    e1(api.get("/key/info", params={"key": key["token"]}), 404)


def test_user_delete_unknown_id_deletes_nothing(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.create_user("a")
    assert e2(api.post("/user/delete", json={"user_ids": ["a", "ghost"]}), 404) == {
        "error": "User not found, passed user_id=ghost"
    }
    assert [u["user_id"] for u in emulator.state()["users"]] == ["a"]
    e2(api.post("/user/delete", json={}), 422)


def test_email_uniqueness_is_checked_by_user_new_only(api: httpx.Client) -> None:
    """litellm 1.110.2: `_check_duplicate_user_email` runs in `new_user` only; the
    user_email column is not unique, so /user/update accepts a taken email."""
    for uid, email in (("alice", "alice@x.io"), ("bob", "bob@x.io")):
        api.post("/user/new", json={"user_id": uid, "user_email": email,
                                    "auto_create_key": False})
    dup = e1(api.post("/user/new", json={"user_id": "carol", "user_email": " ALICE@x.io "}), 409)
    assert dup["message"] == "{'error': 'User with email alice@x.io already exists'}"
    moved = api.post("/user/update", json={"user_id": "bob", "user_email": "alice@x.io"})
    assert moved.status_code == 200 and moved.json()["data"]["user_email"] == "alice@x.io"


def test_user_update_clears_an_email_with_the_empty_string_not_null(api: httpx.Client) -> None:
    """litellm 1.110.2 ``internal_user_endpoints.py::_update_internal_user_params`` keeps
    only values that are ``not None`` and not ``[]``/``{}``: ``user_email: null`` leaves
    the address, ``""`` stores the empty string. `_check_duplicate_user_field` skips a
    falsy value, so the freed address can be given to a new user (syncd's
    ReleaseEmail relies on both)."""
    api.post("/user/new", json={"user_id": "gone", "user_email": "Lead@x.io",
                                "auto_create_key": False, "metadata": {"k": "v"}})
    kept = api.post("/user/update", json={"user_id": "gone", "user_email": None})
    assert kept.status_code == 200 and kept.json()["data"]["user_email"] == "Lead@x.io"
    cleared = api.post("/user/update", json={"user_id": "gone", "user_email": "",
                                             "metadata": {"k": "v", "old": "Lead@x.io"}})
    assert cleared.status_code == 200 and cleared.json()["data"]["user_email"] == ""
    assert cleared.json()["data"]["metadata"] == {"k": "v", "old": "Lead@x.io"}
    new = api.post("/user/new", json={"user_id": "hire", "user_email": "lead@x.io",
                                      "auto_create_key": False})
    assert new.status_code == 200, new.text
    other = api.post("/user/new", json={"user_id": "other", "user_email": "",
                                        "auto_create_key": False})
    assert other.status_code == 200, other.text  # "" is never a duplicate


def test_user_list_email_filter_is_a_case_insensitive_substring(api: httpx.Client) -> None:
    for uid, email in (("alice", "alice@x.io"), ("malice", "MAlice@x.io"), ("bob", "bob@x.io")):
        api.post("/user/new", json={"user_id": uid, "user_email": email,
                                    "auto_create_key": False})
    rows = api.get("/user/list", params={"user_email": "ALICE@x"}).json()["users"]
    assert sorted(r["user_id"] for r in rows) == ["alice", "malice"]
