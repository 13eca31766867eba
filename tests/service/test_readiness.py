"""/readyz: not ready before the first success, after N failed runs in a row, or when
the last success is too old; ready again after recovery. /healthz stays up."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from tests.fixtures.keycloak import RealmFactory
from tests.service.conftest import DaemonFactory
from tests.service.test_daemon import check_run_ids

pytestmark = pytest.mark.integration

GROUPS: dict[str, dict[str, str]] = {"/llm/research": {}}
USERS = [{"username": "alice", "email": "alice@example.com", "groups": ["/llm/research"]}]
ALL_503 = [{"path": "*", "error_rate": 1.0, "error_status": 503}]


def test_readiness_follows_failures_and_recovery(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    emulator.set_faults(ALL_503)  # LiteLLM answers 503 to everything from the start
    daemon = syncd_daemon(realm, emulator, readiness={"max_consecutive_failures": 2})

    # Not ready before the first success, however many runs failed.
    runs = daemon.wait_runs(1)
    assert runs[0]["result"] == "failure"
    status, body = daemon.ready()
    assert status == 503
    assert body["status"] == "not ready: no successful sync yet"
    assert body["last_success"] is None
    assert daemon.metric("syncd_ready") == 0
    assert daemon.metric("syncd_runs_total", result="failure") >= 1
    assert daemon.metric("syncd_errors_total", stage="litellm") >= 1
    assert daemon.metric("syncd_http_requests_total", target="litellm", method="GET",
                         status="503") >= 1
    assert daemon.metric("syncd_http_retries_total", target="litellm") >= 1
    assert daemon.metric("syncd_last_success_timestamp_seconds") == 0
    # Liveness is about the process, not about LiteLLM.
    assert daemon.get("/healthz").status_code == 200

    # LiteLLM recovers: the next run succeeds and the daemon turns ready.
    emulator.clear_faults()
    daemon.wait_for("ready", lambda: daemon.ready()[0] == 200, timeout=20)
    assert daemon.metric("syncd_consecutive_failures") == 0
    assert daemon.metric("syncd_ready") == 1

    # LiteLLM fails again: still ready after one failed run, not after two.
    emulator.set_faults(ALL_503)
    seen: list[tuple[int, dict[str, Any]]] = []

    def not_ready() -> bool:
        seen.append(daemon.ready())
        return seen[-1][0] == 503

    daemon.wait_for("not ready", not_ready, timeout=20)
    status, body = seen[-1]
    assert body["status"].endswith("consecutive failed runs"), body
    assert body["last_success"] is not None
    # Never unready with fewer failures than the threshold.
    assert all(b["consecutive_failures"] >= 2 for s, b in seen if s == 503)
    assert daemon.metric("syncd_consecutive_failures") >= 2
    assert daemon.metric("syncd_ready") == 0

    # And ready again after recovery.
    emulator.clear_faults()
    daemon.wait_for("ready again", lambda: daemon.ready()[0] == 200, timeout=20)
    assert daemon.metric("syncd_consecutive_failures") == 0
    status, body = daemon.ready()
    assert body["status"] == "ready" and body["consecutive_failures"] == 0

    # Failed runs leave nothing behind: no event of a run after its summary.
    daemon.signal()
    assert daemon.wait_exit() == 0
    check_run_ids(daemon)


def test_readiness_expires_with_the_last_success(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    daemon = syncd_daemon(
        realm, emulator,
        readiness={"max_consecutive_failures": 1000, "max_success_age_seconds": 3},
    )
    daemon.wait_for("ready", lambda: daemon.ready()[0] == 200)
    emulator.set_faults(ALL_503)
    daemon.wait_for("not ready", lambda: daemon.ready()[0] == 503, timeout=20)
    status, body = daemon.ready()
    assert status == 503
    assert body["status"].startswith("not ready: last success"), body
    assert body["last_success_age_seconds"] > 3
    assert body["consecutive_failures"] < 1000
    emulator.clear_faults()
    daemon.wait_for("ready again", lambda: daemon.ready()[0] == 200, timeout=20)
