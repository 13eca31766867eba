"""The daemon end to end: schedule, /metrics moving with Keycloak, run ids in the logs."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from tests.fixtures.keycloak import RealmFactory
from tests.service.conftest import DaemonFactory, SyncdProcess

pytestmark = pytest.mark.integration

# Events the daemon itself logs, from outside the run's task (signal handlers, the
# scheduler's overrun listener, libraries, the endpoints): they may fall between a
# run's sync_started and sync_finished, and belong to no run.
DAEMON_EVENTS = frozenset(
    {
        "service_starting",
        "service_started",
        "service_stopped",
        "service_failed",
        "shutdown_requested",
        "shutdown_waiting_for_run",
        "shutdown_timeout",
        "shutdown_forced",
        "run_overrun",
        "run_cancelled",
        "run_crashed",
        "library_log",
        "http_request_failed",
    }
)

GROUPS: dict[str, dict[str, str]] = {"/llm/research": {}, "/llm/ops": {}, "/finance": {}}
USERS = [
    {"username": "alice", "email": "alice@example.com", "groups": ["/llm/research"]},
    {"username": "bob", "email": "bob@example.com", "groups": ["/llm/ops"]},
    {"username": "carol", "email": "carol@example.com", "groups": ["/finance"]},
]


def memberships(emulator: EmulatorAdmin) -> set[tuple[str, str]]:
    """(team alias, user email) for every member row the emulator holds."""
    state = emulator.state()
    alias = {t["team_id"]: t.get("team_alias") for t in state["teams"]}
    email = {u["user_id"]: u.get("user_email") for u in state["users"]}
    out = set()
    for team in state["teams"]:
        for member in team.get("members_with_roles") or []:
            user = member.get("user_id")
            if email.get(user):  # not the proxy admin LiteLLM adds to new teams
                out.add((alias[team["team_id"]], email[user]))
    return out


def check_run_ids(daemon: SyncdProcess) -> int:
    """Every event between a run's sync_started and sync_finished carries its run_id."""
    current: str | None = None
    runs = 0
    for event in daemon.events():
        name = event.get("event")
        if name == "sync_started":
            assert current is None, f"runs overlap: {event}"
            current = event.get("run_id")
            assert current, f"sync_started without run_id: {event}"
            runs += 1
        elif current is not None and name not in DAEMON_EVENTS:
            assert event.get("run_id") == current, f"event of run {current} without it: {event}"
        if name == "sync_finished":
            current = None
        if current is None and name not in ("sync_started", "sync_finished"):
            assert "run_id" not in event, f"run_id leaked outside a run: {event}"
    return runs


def test_metrics_follow_keycloak_changes(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    daemon = syncd_daemon(realm, emulator, safety={"max_blocked": 0})

    # The first run starts at once; readiness follows its success.
    daemon.wait_runs(1)
    daemon.wait_for("ready", lambda: daemon.ready()[0] == 200)
    assert daemon.metric("syncd_runs_total", result="success") >= 1
    assert daemon.metric("syncd_managed_teams") == 3  # /llm itself is selected too
    assert daemon.metric("syncd_managed_members") == 2
    assert daemon.metric("syncd_changes_total", operation="create_team") == 3
    assert daemon.metric("syncd_changes_total", operation="add_member") == 2
    assert daemon.metric("syncd_consecutive_failures") == 0
    assert daemon.metric("syncd_last_success_timestamp_seconds") > 0
    assert daemon.metric("syncd_ready") == 1
    assert daemon.metric("syncd_http_requests_total", target="litellm", method="GET",
                         status="200") > 0
    assert daemon.metric("syncd_http_requests_total", target="keycloak", method="GET",
                         status="200") > 0
    assert memberships(emulator) >= {("research", "alice@example.com"),
                                      ("ops", "bob@example.com")}
    health = daemon.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert daemon.get("/nope").status_code == 404

    # Later runs on the interval find nothing to do.
    runs = len(daemon.wait_runs(3))
    assert daemon.metric("syncd_runs_total", result="success") >= 3
    assert daemon.metric("syncd_changes_total", operation="add_member") == 2
    assert daemon.metric("syncd_pending_changes") == 0

    # A user joins a group in Keycloak: the next run adds the member.
    realm.add_user_to_group("carol", "/llm/research")
    daemon.wait_for(
        "carol's membership", lambda: daemon.metric("syncd_managed_members") == 3
    )
    assert daemon.metric("syncd_changes_total", operation="add_member") == 3
    assert ("research", "carol@example.com") in memberships(emulator)

    # A user moves to another team: one member added, one removed.
    realm.add_user_to_group("alice", "/llm/ops")
    realm.remove_user_from_group("alice", "/llm/research")
    daemon.wait_for(
        "alice's move",
        lambda: daemon.metric("syncd_changes_total", operation="remove_member") == 1,
    )
    assert daemon.metric("syncd_managed_members") == 3
    assert daemon.metric("syncd_changes_total", operation="add_member") == 4
    assert ("research", "alice@example.com") not in memberships(emulator)
    assert ("ops", "alice@example.com") in memberships(emulator)

    # A departure above the brake's limit is held back, and the gauges say so;
    # a braked run is no failure, so the daemon stays ready.
    realm.remove_user_from_group("bob", "/llm/ops")
    daemon.wait_for("the brake", lambda: daemon.metric("syncd_brake_engaged") == 1)
    assert daemon.metric("syncd_held_back_operations") == 1  # block_user (no keys)
    assert daemon.metric("syncd_runs_total", result="braked") >= 1
    assert daemon.metric("syncd_consecutive_failures") == 0
    assert daemon.ready()[0] == 200
    assert ("ops", "bob@example.com") in memberships(emulator)
    realm.add_user_to_group("bob", "/llm/ops")
    daemon.wait_for("the brake released", lambda: daemon.metric("syncd_brake_engaged") == 0)

    # A new group under the prefix becomes a team.
    realm.create_group("/llm/legal")
    daemon.wait_for("the new team", lambda: daemon.metric("syncd_managed_teams") == 4)
    assert daemon.metric("syncd_changes_total", operation="create_team") == 4

    assert len(daemon.finished_runs()) > runs
    assert daemon.metric("syncd_runs_total", result="failure") == 0
    assert daemon.metric("syncd_run_duration_seconds_count") == sum(
        daemon.metric("syncd_runs_total", result=r)
        for r in ("success", "failure", "partial", "braked")
    )

    daemon.signal()
    assert daemon.wait_exit() == 0
    assert check_run_ids(daemon) >= 5
    finished = daemon.finished_runs()
    assert {e["result"] for e in finished} == {"success", "braked"}
    assert all(e.get("level") for e in daemon.events())


def test_cron_schedule_runs_at_start(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    """With a cron expression the first run still happens at start."""
    realm = realm_factory(groups=GROUPS, users=USERS)
    daemon = syncd_daemon(realm, emulator, schedule={"cron": "0 3 * * *", "jitter_seconds": 30})
    started: dict[str, Any] = daemon.named("service_started")[0]
    assert "cron '0 3 * * *' (UTC)" in started["schedule"]
    runs = daemon.wait_runs(1)
    assert runs[0]["result"] == "success"
    assert daemon.wait_for("ready", lambda: daemon.ready()[0] == 200)
    health = daemon.get("/healthz").json()
    assert health["next_run"].endswith("+00:00")
    assert "T03:00:" in health["next_run"]  # 03:00 UTC plus at most 30 s of jitter
