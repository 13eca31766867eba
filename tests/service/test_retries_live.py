"""Retries against the emulator over real HTTP: bursts of 429/5xx/dropped connections
are retried and the run converges; a wrong key (401) fails fast, without retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from syncd.apply import SINGLE_ATTEMPTS
from tests.fixtures.keycloak import RealmFactory
from tests.service.conftest import DaemonFactory, run_once
from tests.service.test_daemon import memberships

pytestmark = pytest.mark.integration

GROUPS: dict[str, dict[str, str]] = {"/llm/research": {}, "/llm/ops": {}}
USERS = [
    {"username": "alice", "email": "alice@example.com", "groups": ["/llm/research"]},
    {"username": "bob", "email": "bob@example.com", "groups": ["/llm/ops"]},
]
EXPECTED = {("research", "alice@example.com"), ("ops", "bob@example.com")}

# One burst, in this order: a 429 asking for 3 s, three 503, two 502, one dropped
# connection; then the emulator behaves. Seven faults, so seven retries.
BURST = [
    {"path": "*", "rate_limit_rate": 1.0, "retry_after_s": 3, "max_faults": 1},
    {"path": "*", "error_rate": 1.0, "error_status": 503, "max_faults": 3},
    {"path": "*", "error_rate": 1.0, "error_status": 502, "max_faults": 2},
    {"path": "*", "drop_rate": 1.0, "max_faults": 1},
]


def test_bursts_of_429_and_5xx_are_retried_and_the_run_converges(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    emulator.set_faults(BURST, seed=1)
    daemon = syncd_daemon(
        realm, emulator,
        retries={"max_attempts": 8, "initial_backoff_seconds": 0.05, "max_backoff_seconds": 5},
    )
    first = daemon.wait_runs(1)[0]
    assert first["result"] == "success", first
    assert memberships(emulator) == EXPECTED
    assert emulator.counters()["faults"] == {"429": 1, "503": 3, "502": 2, "dropped": 1}

    m = daemon.metrics()

    def value(name: str, **labels: str) -> float:
        return m.get((name, frozenset(labels.items())), 0.0)

    def by_status(status: str) -> float:
        return sum(
            v for (name, labels), v in m.items()
            if name == "syncd_http_requests_total" and ("target", "litellm") in labels
            and ("status", status) in labels
        )

    assert value("syncd_http_retries_total", target="litellm") == 7
    assert value("syncd_http_retries_total", target="keycloak") == 0
    assert (by_status("429"), by_status("503"), by_status("502"), by_status("error")) == (
        1, 3, 2, 1
    )
    assert value("syncd_runs_total", result="success") >= 1
    assert value("syncd_runs_total", result="failure") == 0
    # Retry-After: 3 was waited for (a run takes ~1 s here otherwise).
    assert first["duration"] >= 3
    retries = daemon.named("http_retry")
    assert len(retries) == 7
    assert all(r["run_id"] == first["run_id"] for r in retries)

    # Later runs see a healthy emulator: no more retries.
    daemon.wait_runs(2)
    assert daemon.metric("syncd_http_retries_total", target="litellm") == 7


def test_a_wrong_litellm_key_fails_fast_without_retries(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory,
    tmp_path: Path,
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    retries = {"max_attempts": 5, "initial_backoff_seconds": 1, "max_backoff_seconds": 5}
    daemon = syncd_daemon(realm, emulator, api_key="sk-not-the-key", retries=retries)
    first = daemon.wait_runs(1)[0]
    assert first["result"] == "failure" and first["exit_code"] == 5, first
    assert first["duration"] < 1  # with even one retry it would take more than 1 s
    assert daemon.metric("syncd_http_retries_total", target="litellm") == 0
    assert daemon.metric("syncd_http_requests_total", target="litellm", method="GET",
                         status="401") >= 1
    assert daemon.metric("syncd_errors_total", stage="litellm") >= 1
    assert not daemon.named("http_retry")
    assert daemon.ready()[0] == 503
    failed = daemon.named("sync_failed")[0]
    assert failed["stage"] == "litellm"
    assert "sk-not-the-key" not in daemon.raw_log()
    assert memberships(emulator) == set()

    # The same from `syncd --once`: exit code 5 at once.
    result = run_once(realm, emulator, tmp_path, api_key="sk-not-the-key", retries=retries)
    assert result.returncode == 5, result.stderr
    assert "http_retry" not in result.stderr


def test_one_failing_team_makes_the_run_partial_not_failed(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    """A member_add answered 500 every time this run sends it (not retried by HTTP;
    resent by the applier after re-reading the team, SINGLE_ATTEMPTS times alone):
    that team's member fails, the other team gets its member, the run ends as
    partial; the next run completes the work. One write at a time, so that the
    failing sends are all the first team's."""
    realm = realm_factory(groups=GROUPS, users=USERS)
    emulator.set_faults([
        {"path": "/team/member_add", "error_rate": 1.0, "error_status": 500,
         "max_faults": SINGLE_ATTEMPTS}
    ])
    daemon = syncd_daemon(realm, emulator, litellm={"concurrency": 1})
    first = daemon.wait_runs(1)[0]
    assert first["result"] == "partial" and first["exit_code"] == 6, first
    assert first["failed"] == 1 and first["applied"] == first["planned"] - 1
    daemon.wait_for("convergence", lambda: memberships(emulator) == EXPECTED)
    daemon.wait_for("a success", lambda: daemon.metric("syncd_runs_total", result="success"))
    assert daemon.metric("syncd_runs_total", result="partial") == 1
    assert daemon.metric("syncd_operation_failures_total", operation="add_member") == 1
    assert daemon.metric("syncd_changes_total", operation="add_member") == 2
    assert daemon.metric("syncd_errors_total", stage="apply") == 1
    assert daemon.metric("syncd_http_retries_total", target="litellm") == 0
    assert daemon.metric("syncd_consecutive_failures") == 0
    assert daemon.ready()[0] == 200
