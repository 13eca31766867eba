"""Admin API (state, audit, settings, reset), the CLI process, and 422 parity with LiteLLM."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from devtools.litellm_emulator.admin import SEED_ACTOR, EmulatorAdmin
from devtools.litellm_emulator.server import EmulatorProcess
from tests.emulator.conftest import ACTOR

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm.proxy import _types as litellm_types


def test_audit_log_records_every_write_with_changed_by(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    api.post("/team/new", json={"team_id": "t1"})
    api.post("/team/new", json={"team_id": "t1"})  # 400, still a write the proxy answered
    api.get("/team/list")  # reads are not audited
    httpx.post(
        f"{emulator.url}/team/block",
        json={"team_id": "t1"},
        headers={"Authorization": f"Bearer {emulator.master_key}"},
    )
    emulator.generate_key()
    audit = emulator.audit()
    assert [(a["method"], a["path"], a["status"], a["changed_by"]) for a in audit] == [
        ("POST", "/team/new", 200, ACTOR),
        ("POST", "/team/new", 400, ACTOR),
        ("POST", "/team/block", 200, None),
        ("POST", "/key/generate", 200, SEED_ACTOR),
    ]
    unattributed = [a for a in audit if a["changed_by"] is None]
    assert len(unattributed) == 1


def test_state_dump_has_every_table(emulator: EmulatorAdmin) -> None:
    state = emulator.state()
    assert set(state) == {
        "teams",
        "users",
        "keys",
        "memberships",
        "deleted_keys",
        "deleted_teams",
        "audit",
        "consistency_problems",
        "settings",
    }
    assert state["settings"] == {
        "auto_add_proxy_admin": True,
        "delete_keys_on_member_delete": True,
        "licensed": False,
    }


def test_settings_switch_and_reset_restores_them(emulator: EmulatorAdmin) -> None:
    assert emulator.settings(licensed=True)["licensed"] is True
    assert emulator.settings() == {
        "auto_add_proxy_admin": True,
        "delete_keys_on_member_delete": True,
        "licensed": True,
    }
    emulator.create_team("t1")
    emulator.reset()
    assert emulator.settings()["licensed"] is False
    assert emulator.state()["teams"] == []
    with emulator.client() as client:
        assert client.put("/_emulator/settings", json={"bogus": True}).status_code == 422


def test_validation_errors_carry_only_type_loc_msg(api: httpx.Client) -> None:
    response = api.post("/team/new", json={"max_budget": "lots"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "float_parsing",
                "loc": ["body", "max_budget"],
                "msg": "Input should be a valid number, unable to parse string as a number",
            }
        ]
    }


def test_non_json_body_is_422(api: httpx.Client) -> None:
    response = api.post(
        "/team/new", content=b"not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


# Each case: path, LiteLLM request model, body. The emulator must reject (422) exactly the
# bodies LiteLLM's own model rejects: proof that validation really is LiteLLM's.
PARITY_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("/team/new", "NewTeamRequest", {"team_id": "p1"}),
    (
        "/team/new",
        "NewTeamRequest",
        {"members_with_roles": [{"user_email": "a@b.c", "role": "user"}]},
    ),
    ("/team/new", "NewTeamRequest", {"members_with_roles": [{"role": "admin"}]}),
    ("/team/new", "NewTeamRequest", {"tpm_limit": 1.5}),
    ("/team/update", "UpdateTeamRequest", {"team_id": "p1", "blocked": "yes"}),
    ("/team/update", "UpdateTeamRequest", {"blocked": True}),
    ("/team/member_add", "TeamMemberAddRequest", {"team_id": "p1", "member": []}),
    ("/team/member_add", "TeamMemberAddRequest", {"team_id": "p1", "member": {"user_id": "a"}}),
    ("/team/member_delete", "TeamMemberDeleteRequest", {"team_id": "p1", "user_email": "a@b.c"}),
    ("/team/member_delete", "TeamMemberDeleteRequest", {"team_id": "p1"}),
    (
        "/team/member_update",
        "TeamMemberUpdateRequest",
        {"team_id": "p1", "user_id": "a", "role": "owner"},
    ),
    ("/team/block", "BlockTeamRequest", {"team_id": 5}),
    ("/team/delete", "DeleteTeamRequest", {"team_ids": ["p1"]}),
    ("/team/delete", "DeleteTeamRequest", {"team_ids": [None]}),
    ("/user/new", "NewUserRequest", {"user_role": "internal_user"}),
    ("/user/new", "NewUserRequest", {"user_role": "customer"}),
    ("/user/update", "UpdateUserRequest", {"user_email": "x@y.z"}),
    ("/user/update", "UpdateUserRequest", {"user_alias": "x"}),
    ("/user/delete", "DeleteUserRequest", {"user_ids": "a"}),
    ("/key/generate", "GenerateKeyRequest", {"duration": "1h"}),
    ("/key/generate", "GenerateKeyRequest", {"rpm_limit_type": "whatever"}),
    ("/key/update", "UpdateKeyRequest", {"key_alias": "a"}),
    ("/key/update", "UpdateKeyRequest", {"metadata": {}}),
    ("/key/delete", "KeyRequest", {"keys": []}),
    ("/key/delete", "KeyRequest", {"keys": "sk-abc"}),
    ("/key/block", "BlockKeyRequest", {"key": None}),
    ("/key/unblock", "BlockKeyRequest", {"key": ["sk-a"]}),
]


@pytest.mark.parametrize(("path", "model_name", "body"), PARITY_CASES)
def test_422_matches_litellm_request_models(
    api: httpx.Client, path: str, model_name: str, body: dict[str, Any]
) -> None:
    model = getattr(litellm_types, model_name)
    try:
        model.model_validate(body)
        litellm_rejects = False
    except Exception:
        litellm_rejects = True
    response = api.post(path, json=body)
    assert (response.status_code == 422) == litellm_rejects, response.text


def test_cli_process_serves_and_reports_ready() -> None:
    with EmulatorProcess(
        master_key="sk-cli-master-key-0001", args=["--licensed", "--no-auto-add-proxy-admin"]
    ) as proc:
        assert proc.url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{proc.url}/health/liveliness").json() == "I'm alive!"
        with EmulatorAdmin(proc.url, proc.master_key) as admin:
            assert admin.settings() == {
                "auto_add_proxy_admin": False,
                "delete_keys_on_member_delete": True,
                "licensed": True,
            }
            team = admin.create_team("t1")
            assert team["members_with_roles"] == []
