"""Key authentication oracle: access is really cut and really restored (user_api_key_auth rules)."""

from __future__ import annotations

import time

import httpx

from devtools.litellm_emulator.admin import EmulatorAdmin


def _allowed(emulator: EmulatorAdmin, key: str) -> bool:
    verdict = emulator.auth_check(key)
    assert verdict["status"] == (200 if verdict["allowed"] else 401)
    return bool(verdict["allowed"])


def test_fresh_key_and_master_key_pass(emulator: EmulatorAdmin) -> None:
    key = emulator.generate_key(user_id="a")["key"]
    assert emulator.auth_check(key) == {
        "allowed": True,
        "status": 200,
        "reason": "key passed all auth checks",
        "rule": "ok",
        "type": None,
        "param": None,
    }
    assert emulator.auth_check(emulator.master_key)["rule"] == "master_key"


def test_key_block_and_unblock(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    key = emulator.generate_key()["key"]
    api.post("/key/block", json={"key": key})
    verdict = emulator.auth_check(key)
    assert (verdict["allowed"], verdict["rule"]) == (False, "key_blocked")
    assert (
        verdict["reason"]
        == "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."
    )
    api.post("/key/unblock", json={"key": key})
    assert _allowed(emulator, key)


def test_key_blocked_through_key_update(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    key = emulator.generate_key()["key"]
    api.post("/key/update", json={"key": key, "blocked": True, "metadata": {"blocked_by": "syncd"}})
    assert emulator.auth_check(key)["rule"] == "key_blocked"


def test_team_block_cuts_every_team_key(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    api.post("/team/new", json={"team_id": "t1"})
    team_key = emulator.generate_key(team_id="t1", user_id="a")["key"]
    personal = emulator.generate_key(user_id="a")["key"]
    api.post("/team/block", json={"team_id": "t1"})
    verdict = emulator.auth_check(team_key)
    assert (verdict["allowed"], verdict["rule"]) == (False, "team_blocked")
    assert verdict["reason"].startswith("Authentication Error, Team=t1 is blocked.")
    assert _allowed(emulator, personal)
    api.post("/team/unblock", json={"team_id": "t1"})
    assert _allowed(emulator, team_key)


def test_scim_active_false_is_a_reversible_kill_switch(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    emulator.create_user("a")
    key = emulator.generate_key(user_id="a")["key"]
    api.post("/user/update", json={"user_id": "a", "metadata": {"scim_active": False}})
    verdict = emulator.auth_check(key)
    assert (verdict["allowed"], verdict["rule"]) == (False, "user_deactivated")
    assert "User=a has been deactivated via SCIM" in verdict["reason"]
    api.post("/user/update", json={"user_id": "a", "metadata": {"scim_active": True}})
    assert _allowed(emulator, key)
    api.post("/user/update", json={"user_id": "a", "metadata": {"scim_active": False}})
    assert not _allowed(emulator, key)
    api.post("/user/update", json={"user_id": "a", "metadata": {"other": 1}})  # replaced: flag gone
    assert _allowed(emulator, key)


def test_deleted_and_unknown_keys(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    key = emulator.generate_key()["key"]
    api.post("/key/delete", json={"keys": [key]})
    verdict = emulator.auth_check(key)
    assert (verdict["allowed"], verdict["rule"], verdict["type"]) == (
        False,
        "key_deleted",
        "token_not_found_in_db",
    )
    assert verdict["reason"] == "Authentication Error, Invalid API key provided."
    assert emulator.auth_check("sk-never-issued-0000")["rule"] == "key_not_found"
    assert emulator.auth_check("not-an-sk-key")["rule"] == "not_virtual_key"
    assert emulator.auth_check(None)["rule"] == "no_key"


def test_member_delete_cuts_the_members_team_key(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    api.post(
        "/team/new",
        json={"team_id": "t1", "members_with_roles": [{"user_id": "a", "role": "user"}]},
    )
    key = emulator.generate_key(team_id="t1", user_id="a")["key"]
    assert _allowed(emulator, key)
    api.post("/team/member_delete", json={"team_id": "t1", "user_id": "a"})
    assert emulator.auth_check(key)["rule"] == "key_deleted"


def test_expired_key(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    key = emulator.generate_key(duration="1s")
    assert _allowed(emulator, key["key"])
    api.post("/key/update", json={"key": key["key"], "duration": "-1"})
    assert _allowed(emulator, key["key"])
    state_key = emulator.state()["keys"][0]
    assert state_key["expires"] is None
    generated = emulator.generate_key(duration="1s")
    expired = generated["key"]
    time.sleep(1.1)
    verdict = emulator.auth_check(expired)
    assert (verdict["rule"], verdict["type"]) == ("key_expired", "expired_key")
    assert verdict["param"] == f"sk-...{generated['token'][-4:]}"  # abbreviates the hash
