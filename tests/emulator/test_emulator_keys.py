"""Key endpoints: success and documented error cases, status codes and body shapes."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from tests.emulator.test_emulator_teams import e1, e2


def test_key_generate_row_fields(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    response = api.post(
        "/key/generate",
        json={
            "user_id": "a",
            "team_id": "t1",
            "key_alias": "a-t1",
            "metadata": {"m": 1},
            "duration": "1h",
        },
    )
    assert response.status_code == 200
    body = response.json()
    raw = body["key"]
    assert raw.startswith("sk-")
    assert body["token"] == hashlib.sha256(raw.encode()).hexdigest() == body["token_id"]
    assert body["key_name"] == f"sk-...{raw[-4:]}"
    assert body["expires"] is not None
    row = emulator.state()["keys"][0]
    assert {
        k: row[k]
        for k in ("token", "key_name", "key_alias", "user_id", "team_id", "blocked", "metadata")
    } == {
        "token": body["token"],
        "key_name": body["key_name"],
        "key_alias": "a-t1",
        "user_id": "a",
        "team_id": "t1",
        "blocked": None,
        "metadata": {"m": 1},
    }
    assert row["expires"] is not None and row["created_at"] is not None
    # /key/generate does not create the user
    assert emulator.state()["users"] == []


def test_key_generate_custom_key_and_errors(api: httpx.Client) -> None:
    ok = api.post("/key/generate", json={"key": "sk-my-custom-key-0001"})
    assert ok.json()["key"] == "sk-my-custom-key-0001"
    bad_prefix = e1(api.post("/key/generate", json={"key": "my-custom-key-0001"}), 400)
    assert "must start with 'sk-'" in bad_prefix["message"]
    short = e1(api.post("/key/generate", json={"key": "sk-short"}), 400)
    assert "at least 16 characters" in short["message"]


def test_key_generate_duplicate_alias_is_400_typed(api: httpx.Client) -> None:
    api.post("/key/generate", json={"key_alias": "dup"})
    error = e1(api.post("/key/generate", json={"key_alias": "dup"}), 400)
    assert error["type"] == "bad_request_error"
    assert error["param"] == "key_alias"
    assert (
        error["message"]
        == "Key with alias 'dup' already exists. Unique key aliases across all keys are required."
    )


def test_key_generate_invalid_body_is_422(api: httpx.Client) -> None:
    e2(api.post("/key/generate", json={"max_budget": "lots"}), 422)
    e2(api.post("/key/generate", json={"models": "gpt-4o"}), 422)


def test_key_list_filters_and_full_objects(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    k1 = emulator.generate_key(user_id="alice", team_id="t1", key_alias="one")
    k2 = emulator.generate_key(user_id="alice2", team_id="t1")
    emulator.generate_key(user_id="bob")
    body = api.get("/key/list").json()
    assert set(body) == {"keys", "total_count", "current_page", "total_pages"}
    assert body["total_count"] == 3 and len(body["keys"]) == 3
    assert all(isinstance(k, str) and len(k) == 64 for k in body["keys"])
    assert api.get("/key/list", params={"user_id": "alice"}).json()["keys"] == [k1["token"]]
    by_team = api.get("/key/list", params={"team_id": "t1"}).json()["keys"]
    assert set(by_team) == {k1["token"], k2["token"]}
    assert api.get("/key/list", params={"key_alias": "one"}).json()["keys"] == [k1["token"]]
    full = api.get("/key/list", params={"user_id": "alice", "return_full_object": "true"}).json()[
        "keys"
    ]
    assert (
        full[0]["token"] == k1["token"]
        and full[0]["user_id"] == "alice"
        and full[0]["key_alias"] == "one"
    )


def test_key_list_pagination_and_size_cap(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    for _ in range(5):
        emulator.generate_key(user_id="p")
    page = api.get("/key/list", params={"size": 2, "page": 3}).json()
    assert (page["total_count"], page["current_page"], page["total_pages"], len(page["keys"])) == (
        5,
        3,
        3,
        1,
    )
    assert api.get("/key/list", params={"size": 100}).status_code == 200
    e2(api.get("/key/list", params={"size": 101}), 422)
    e2(api.get("/key/list", params={"page": 0}), 422)


def test_key_info_status(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    key = emulator.generate_key(user_id="a")
    info = api.get("/key/info", params={"key": key["token"]}).json()
    assert info["key"] == key["token"]
    assert info["info"]["status"] == "active"
    assert "token" not in info["info"]
    assert api.get("/key/info", params={"key": key["key"]}).json()["info"]["user_id"] == "a"
    api.post("/key/block", json={"key": key["key"]})
    assert api.get("/key/info", params={"key": key["token"]}).json()["info"]["status"] == "revoked"
    api.post("/key/delete", json={"keys": [key["key"]]})
    assert api.get("/key/info", params={"key": key["token"]}).json()["info"]["status"] == "deleted"


def test_key_info_unknown_is_404_typed(api: httpx.Client) -> None:
    error = e1(api.get("/key/info", params={"key": "sk-nothing-here-000"}), 404)
    assert error == {
        "message": "Key not found in database",
        "type": "not_found_error",
        "param": "key",
        "code": "404",
    }


def test_key_block_and_unblock(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    key = emulator.generate_key()
    blocked = api.post("/key/block", json={"key": key["key"]})
    assert blocked.status_code == 200 and blocked.json()["blocked"] is True
    assert blocked.json()["token"] == key["token"]
    unblocked = api.post("/key/unblock", json={"key": key["token"]})
    assert unblocked.json()["blocked"] is False


@pytest.mark.parametrize("path", ["/key/block", "/key/unblock"])
def test_key_block_errors(api: httpx.Client, path: str) -> None:
    missing = e1(api.post(path, json={"key": "sk-does-not-exist-00"}), 404)
    assert missing == {
        "message": "Key not found.",
        "type": "not_found_error",
        "param": "key",
        "code": "404",
    }
    bad = e1(api.post(path, json={"key": "not a key!"}), 400)
    assert bad["message"] == "Invalid key format." and bad["type"] == "bad_request_error"
    e2(api.post(path, json={}), 422)


def test_key_delete(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    k1 = emulator.generate_key()
    k2 = emulator.generate_key(key_alias="two")
    partial = api.post("/key/delete", json={"keys": [k1["key"], "sk-never-existed-000"]})
    assert partial.status_code == 200
    assert partial.json() == {"deleted_keys": [k1["key"], "sk-never-existed-000"]}
    by_alias = api.post("/key/delete", json={"key_aliases": ["two"]})
    assert by_alias.json() == {"deleted_keys": ["two"]}
    assert emulator.state()["keys"] == []
    assert {d["token"] for d in emulator.state()["deleted_keys"]} == {k1["token"], k2["token"]}


def test_key_delete_errors(api: httpx.Client) -> None:
    error = e1(api.post("/key/delete", json={"keys": ["sk-never-existed-000"]}), 404)
    assert error["message"] == "{'error': 'No keys found'}"
    e2(api.post("/key/delete", json={}), 422)


def test_key_update_replaces_metadata(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    key = emulator.generate_key(metadata={"owner": "syncd", "note": "x"})
    response = api.post(
        "/key/update", json={"key": key["key"], "metadata": {"syncd_blocked": True}}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["key"] == key["key"]
    assert body["metadata"] == {"syncd_blocked": True}
    assert body["token"] == key["token"]
    kept = api.post("/key/update", json={"key": key["token"], "key_alias": "renamed"}).json()
    assert kept["metadata"] == {"syncd_blocked": True} and kept["key"] == key["token"]
    by_alias = api.post("/key/update", json={"key_alias": "renamed", "blocked": True}).json()
    assert by_alias["blocked"] is True


def test_key_update_errors(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    missing = e1(api.post("/key/update", json={"key": "sk-never-existed-000", "metadata": {}}), 404)
    assert missing == {
        "message": "Key not found.",
        "type": "not_found_error",
        "param": "key",
        "code": "404",
    }
    no_alias = e1(api.post("/key/update", json={"key_alias": "ghost"}), 404)
    assert no_alias["param"] == "key_alias"
    e2(api.post("/key/update", json={"metadata": {"a": 1}}), 422)
    emulator.generate_key(key_alias="taken")
    other = emulator.generate_key()
    clash = e1(api.post("/key/update", json={"key": other["key"], "key_alias": "taken"}), 400)
    assert clash["param"] == "key_alias"


def test_key_update_team_change_needs_membership(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    api.post(
        "/team/new",
        json={"team_id": "t1", "members_with_roles": [{"user_id": "a", "role": "user"}]},
    )
    api.post("/team/new", json={"team_id": "t2"})
    key = emulator.generate_key(user_id="a")
    moved = api.post("/key/update", json={"key": key["key"], "team_id": "t1"})
    assert moved.status_code == 200 and moved.json()["team_id"] == "t1"
    refused = e1(api.post("/key/update", json={"key": key["key"], "team_id": "t2"}), 403)
    assert refused["message"].startswith("User=a is not a member of the team=t2.")
    assert refused["type"] == "auth_error"
