"""Master-key authentication of management calls (user_api_key_auth.py::get_api_key & builder)."""

from __future__ import annotations

import httpx
import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_bearer_master_key_is_accepted(emulator: EmulatorAdmin) -> None:
    response = httpx.get(
        f"{emulator.url}/team/list", headers={"Authorization": f"Bearer {emulator.master_key}"}
    )
    assert response.status_code == 200
    assert response.json() == []


def test_x_litellm_api_key_wins_over_authorization(emulator: EmulatorAdmin) -> None:
    good = httpx.get(
        f"{emulator.url}/team/list",
        headers={
            "x-litellm-api-key": emulator.master_key,
            "Authorization": "Bearer sk-wrong-key-123456",
        },
    )
    assert good.status_code == 200
    bad = httpx.get(
        f"{emulator.url}/team/list",
        headers={
            "x-litellm-api-key": "sk-wrong-key-123456",
            "Authorization": f"Bearer {emulator.master_key}",
        },
    )
    assert bad.status_code == 401


def test_x_litellm_api_key_accepts_raw_key_without_bearer(emulator: EmulatorAdmin) -> None:
    response = httpx.get(
        f"{emulator.url}/team/list", headers={"x-litellm-api-key": emulator.master_key}
    )
    assert response.status_code == 200


def test_missing_key_is_401_auth_error(emulator: EmulatorAdmin) -> None:
    response = httpx.post(f"{emulator.url}/team/new", json={})
    assert response.status_code == 401
    error = _error(response)
    assert error == {
        "message": "Authentication Error, No api key passed in.",
        "type": "auth_error",
        "param": None,
        "code": "401",
    }


def test_authorization_without_bearer_prefix_is_malformed(emulator: EmulatorAdmin) -> None:
    response = httpx.get(
        f"{emulator.url}/team/list", headers={"Authorization": emulator.master_key}
    )
    assert response.status_code == 401
    assert "Malformed API Key" in str(_error(response)["message"])


def test_unknown_virtual_key_is_401_token_not_found(emulator: EmulatorAdmin) -> None:
    response = httpx.get(
        f"{emulator.url}/team/list", headers={"Authorization": "Bearer sk-not-a-real-key-0001"}
    )
    assert response.status_code == 401
    error = _error(response)
    assert error["type"] == "token_not_found_in_db"
    assert error["message"] == "Authentication Error, Invalid API key provided."
    assert error["param"] == "key"


def test_non_sk_key_is_rejected_as_not_virtual_key(emulator: EmulatorAdmin) -> None:
    response = httpx.get(
        f"{emulator.url}/team/list", headers={"Authorization": "Bearer hello-world-key"}
    )
    assert response.status_code == 401
    assert str(_error(response)["message"]).startswith(
        "LiteLLM Virtual Key expected. Received=hell****-key"
    )


def test_a_key_without_a_user_is_not_a_team_administrator(emulator: EmulatorAdmin) -> None:
    """No owner row: ``_raise_admin_only_route_exception`` says role and user_id "unknown"."""
    key = emulator.generate_key()["key"]
    response = httpx.post(
        f"{emulator.url}/team/new", json={}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 401
    assert _error(response)["type"] == "auth_error"
    assert _error(response)["message"].endswith("Your role=unknown. Your user_id=unknown")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_emulator/state"),
        ("POST", "/_emulator/reset"),
        ("GET", "/_emulator/faults"),
        ("PUT", "/_emulator/faults"),
        ("GET", "/_emulator/counters"),
        ("POST", "/_emulator/counters/reset"),
        ("PUT", "/_emulator/settings"),
        ("POST", "/_emulator/auth_check"),
    ],
)
def test_admin_endpoints_need_the_master_key(
    emulator: EmulatorAdmin, method: str, path: str
) -> None:
    response = httpx.request(method, f"{emulator.url}{path}", json={})
    assert response.status_code == 401


def test_health_liveliness_needs_no_key(emulator: EmulatorAdmin) -> None:
    response = httpx.get(f"{emulator.url}/health/liveliness")
    assert response.status_code == 200
    assert response.json() == "I'm alive!"
