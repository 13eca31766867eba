"""Fault and latency injection, observed from a real httpx client; request counters."""

from __future__ import annotations

import time

import httpx
import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.litellm_emulator.core import EmulatorSettings
from devtools.litellm_emulator.faults import FaultConfig, FaultRule
from devtools.litellm_emulator.server import EmulatorServer


def test_rate_limit_with_retry_after(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "/team/*", "rate_limit_rate": 1.0, "retry_after_s": 7}])
    response = api.get("/team/list")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert api.get("/user/list").status_code == 200  # out of scope


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(api: httpx.Client, emulator: EmulatorAdmin, status: int) -> None:
    emulator.set_faults([{"path": "/key/generate", "error_rate": 1.0, "error_status": status}])
    response = api.post("/key/generate", json={})
    assert response.status_code == status
    assert emulator.state()["keys"] == []  # the fault never reached the API


def test_dropped_connection(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "/team/new", "drop_rate": 1.0}])
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/team/new", json={"team_id": "t1"})
    assert emulator.counters()["faults"]["dropped"] == 1
    emulator.clear_faults()
    assert api.post("/team/new", json={"team_id": "t1"}).status_code == 200


def test_drop_after_commits_the_write_and_loses_the_answer(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    """phase "after": the handler runs (the team exists, the write is audited with
    its real status), then the socket is aborted; the retry meets "already exists"
    exactly as against litellm 1.110.2 (team_endpoints.py::new_team)."""
    emulator.set_faults([{"path": "/team/new", "drop_rate": 1.0, "phase": "after",
                          "max_faults": 1}])
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/team/new", json={"team_id": "t1", "team_alias": "one"})
    assert [t["team_id"] for t in emulator.state()["teams"]] == ["t1"]
    assert [(w["path"], w["status"]) for w in emulator.audit()] == [("/team/new", 200)]
    assert emulator.counters()["faults"] == {"dropped_after": 1}
    retry = api.post("/team/new", json={"team_id": "t1", "team_alias": "one"})
    assert retry.status_code == 400
    assert retry.json()["error"]["message"] == (
        "{'error': 'Team id = t1 already exists. Please use a different team id.'}"
    )


def test_user_new_drop_after_then_retry_is_409(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "/user/new", "drop_rate": 1.0, "phase": "after",
                          "max_faults": 1}])
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/user/new", json={"user_id": "alice", "auto_create_key": False})
    retry = api.post("/user/new", json={"user_id": "alice", "auto_create_key": False})
    assert retry.status_code == 409  # internal_user_endpoints.py::_check_duplicate_user_field
    assert retry.json()["error"]["message"] == "{'error': 'User with id alice already exists'}"
    assert api.get("/user/info", params={"user_id": "alice"}).status_code == 200


def test_answer_stalled_past_the_client_timeout_after_commit(emulator: EmulatorAdmin) -> None:
    """A stall is a fault (limited by max_faults): the first answer comes too late,
    the retry is answered at once."""
    emulator.set_faults([{"path": "/team/new", "stall_rate": 1.0, "stall_ms": 1500,
                          "phase": "after", "max_faults": 1}])
    with emulator.client(timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/team/new", json={"team_id": "t1"})
        # Committed before the answer was due: visible at once, although unanswered.
        assert [t["team_id"] for t in emulator.state()["teams"]] == ["t1"]
        started = time.monotonic()
        assert client.post("/team/new", json={"team_id": "t1"}).status_code == 400
        assert time.monotonic() - started < 0.3
    assert emulator.counters()["faults"] == {"stalled_after": 1}


def test_stall_before_reaches_the_api_late(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "/team/new", "stall_rate": 1.0, "stall_ms": 200}])
    started = time.monotonic()
    assert api.post("/team/new", json={"team_id": "t1"}).status_code == 200
    assert time.monotonic() - started >= 0.2
    assert emulator.counters()["faults"] == {"stalled": 1}


def test_latency_after_delays_every_answer(emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "/team/new", "latency_ms": 1500, "phase": "after"}])
    with emulator.client(timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/team/new", json={"team_id": "t1"})
    assert [t["team_id"] for t in emulator.state()["teams"]] == ["t1"]
    time.sleep(1.4)
    assert emulator.counters()["faults"] == {"latency_after": 1}


def test_error_after_replaces_a_committed_answer(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    """A gateway 502 in front of a proxy that did the work."""
    emulator.set_faults([{"path": "/team/new", "error_rate": 1.0, "error_status": 502,
                          "phase": "after"}])
    assert api.post("/team/new", json={"team_id": "t1"}).status_code == 502
    assert [t["team_id"] for t in emulator.state()["teams"]] == ["t1"]
    assert emulator.counters()["faults"] == {"502_after": 1}


def test_after_phase_latency_alone_still_answers(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    emulator.set_faults([{"path": "/team/new", "latency_ms": 200, "phase": "after"}])
    started = time.monotonic()
    assert api.post("/team/new", json={"team_id": "t1"}).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_method_scope(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "/team/*", "method": "post", "error_rate": 1.0}])
    assert api.get("/team/list").status_code == 200
    assert api.post("/team/new", json={}).status_code == 503


def test_regex_scope(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": r"^/team/(new|update)$", "match": "regex", "error_rate": 1.0}])
    assert api.post("/team/new", json={}).status_code == 503
    assert api.post("/team/update", json={"team_id": "x"}).status_code == 503
    assert api.post("/team/block", json={"team_id": "x"}).status_code == 404


def test_fixed_latency(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "/team/list", "latency_ms": 200}])
    started = time.monotonic()
    assert api.get("/team/list").status_code == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    api.get("/user/list")
    assert time.monotonic() - started < 0.2


def test_jittered_latency_stays_in_range(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "*", "latency_ms": 20, "jitter_ms": 30}], seed=1)
    for _ in range(3):
        started = time.monotonic()
        api.get("/health/liveliness")
        elapsed = time.monotonic() - started
        assert 0.02 <= elapsed < 0.5


def test_seed_makes_faults_reproducible(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    def run() -> list[int]:
        emulator.set_faults([{"path": "/team/list", "error_rate": 0.5}], seed=42)
        return [api.get("/team/list").status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 503}


def test_max_faults_fails_then_recovers(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "/team/list", "error_rate": 1.0, "max_faults": 2}])
    assert [api.get("/team/list").status_code for _ in range(3)] == [503, 503, 200]
    assert emulator.faults()["fired"] == [2]


def test_admin_endpoints_are_never_faulted(emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "*", "error_rate": 1.0, "drop_rate": 1.0}])
    assert emulator.state()["teams"] == []
    assert emulator.counters()["total"] == {"reads": 0, "writes": 0}


def test_reset_clears_faults_set_at_run_time(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_faults([{"path": "*", "error_rate": 1.0}])
    emulator.reset()
    assert emulator.faults()["rules"] == []
    assert api.get("/team/list").status_code == 200


def test_invalid_fault_config_is_422(emulator: EmulatorAdmin) -> None:
    with emulator.client() as client:
        assert (
            client.put("/_emulator/faults", json={"rules": [{"error_rate": 2}]}).status_code == 422
        )
        assert (
            client.put("/_emulator/faults", json={"rules": [{"error_status": 404}]}).status_code
            == 422
        )


def test_counters_split_reads_and_writes(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    api.get("/team/list")
    api.get("/team/list")
    api.post("/team/new", json={"team_id": "t1"})
    api.patch("/team/t1", json={"team_alias": "x"})
    emulator.set_faults([{"path": "/user/list", "rate_limit_rate": 1.0}])
    api.get("/user/list")
    counters = emulator.counters()
    assert counters["paths"]["/team/list"] == {"reads": 2, "writes": 0}
    assert counters["paths"]["/team/new"] == {"reads": 0, "writes": 1}
    assert counters["paths"]["/team/t1"] == {"reads": 0, "writes": 1}
    assert counters["paths"]["/user/list"] == {
        "reads": 1,
        "writes": 0,
    }  # faulted requests count too
    assert counters["total"] == {"reads": 3, "writes": 2}
    assert counters["faults"] == {"429": 1}
    emulator.reset_counters()
    assert emulator.counters()["paths"] == {}


def test_faults_set_at_start_survive_reset() -> None:
    settings = EmulatorSettings(
        master_key="sk-start-faults-0001",
        faults=FaultConfig(
            seed=3, rules=[FaultRule(path="/team/list", error_rate=1.0, error_status=502)]
        ),
    )
    with (
        EmulatorServer(settings) as server,
        EmulatorAdmin(server.url, server.master_key) as admin,
        admin.client() as client,
    ):
        assert client.get("/team/list").status_code == 502
        admin.clear_faults()
        assert client.get("/team/list").status_code == 200
        admin.reset()
        assert client.get("/team/list").status_code == 502
        assert admin.faults()["seed"] == 3
