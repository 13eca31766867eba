"""The admin-event fast path (issue 13), end to end: the real daemon, a real
Keycloak recording admin events, the emulator; access checked black-box with
the bearer calls an application makes (``/chat/completions``).

The daemon runs with a full reconcile once an hour, so anything that happens
within the test after the first run happened through the fast path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import answers
from tests.service.conftest import DaemonFactory, SyncdProcess, run_once

pytestmark = pytest.mark.integration

GROUPS: dict[str, dict[str, str]] = {"/llm/research": {}, "/llm/ops": {}, "/llm/temp": {}}
USERS = [
    {"username": "alice", "email": "alice@example.com", "groups": ["/llm/research"]},
    {"username": "bob", "email": "bob@example.com", "groups": ["/llm/research", "/llm/ops"]},
    {"username": "carol", "email": "carol@example.com", "groups": ["/llm/ops"]},
    {"username": "dave", "email": "dave@example.com", "groups": ["/llm/temp"]},
    {"username": "erin", "email": "erin@example.com", "groups": []},
]
FAST = {
    "schedule": {"interval_seconds": 3600, "jitter_seconds": 0, "shutdown_timeout_seconds": 20},
    "events": {"enabled": "true", "poll_seconds": 0.5, "overlap_seconds": 10},
}
PROPAGATION_LIMIT = 15.0  # seconds; the figures are in docs/performance.md


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    realm = realm_factory(groups=GROUPS, users=USERS,
                          service_account_roles=("view-users", "view-events"))
    realm.enable_admin_events()
    return realm


def refused_within(daemon: SyncdProcess, emulator: EmulatorAdmin, key: str) -> float:
    """Seconds until `key` stops working (the test fails past the limit)."""
    start = time.monotonic()
    daemon.wait_for("the key to be refused", lambda: answers(emulator, key) != 200,
                    timeout=PROPAGATION_LIMIT, interval=0.2)
    return time.monotonic() - start


def team_members(emulator: EmulatorAdmin, team_id: str) -> set[str]:
    for team in emulator.state()["teams"]:
        if team["team_id"] == team_id:
            return {m["user_id"] for m in team.get("members_with_roles") or []}
    return set()


def set_admin_events(realm: KeycloakRealm, enabled: bool) -> None:
    admin = realm.admin
    path = f"/admin/realms/{realm.name}/events/config"
    config: dict[str, Any] = admin.get(path)
    config["adminEventsEnabled"] = enabled
    admin.request("PUT", path, json_body=config)


def test_changes_reach_litellm_in_seconds_through_the_fast_path(
    realm: KeycloakRealm, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory, tmp_path: Path
) -> None:
    daemon = syncd_daemon(realm, emulator, **FAST)
    daemon.wait_runs(1)
    uid, gid = realm.user_ids(), realm.group_ids()
    alice = emulator.generate_key(user_id=uid["alice"], team_id=gid["/llm/research"])["key"]
    bob = emulator.generate_key(user_id=uid["bob"], key_alias="bob-laptop")["key"]
    carol = emulator.generate_key(user_id=uid["carol"], team_id=gid["/llm/ops"])["key"]
    dave = emulator.generate_key(user_id=uid["dave"], team_id=gid["/llm/temp"])["key"]
    assert {answers(emulator, k) for k in (alice, bob, carol, dave)} == {200}

    realm.remove_user_from_group("alice", "/llm/research")  # membership removal
    refused_within(daemon, emulator, alice)
    realm.disable_user("bob")  # user disabled
    refused_within(daemon, emulator, bob)
    realm.delete_user("carol")  # user deleted
    refused_within(daemon, emulator, carol)
    realm.delete_group("/llm/temp")  # group deleted
    refused_within(daemon, emulator, dave)
    realm.add_user_to_group("erin", "/llm/ops")  # membership added
    daemon.wait_for("erin in the ops team",
                    lambda: uid["erin"] in team_members(emulator, gid["/llm/ops"]),
                    timeout=PROPAGATION_LIMIT, interval=0.2)

    # All of it without a second full reconcile, and the same result one would give.
    assert len(daemon.finished_runs()) == 1
    fast = daemon.named("fast_path_finished")
    assert fast and all(run["result"] == "success" for run in fast)
    assert daemon.metric("syncd_event_fast_path_active") == 1
    assert daemon.metric("syncd_fast_path_runs_total", result="success") >= 5
    assert daemon.metric("syncd_admin_events_applied_total") >= 5
    assert daemon.metric("syncd_event_propagation_seconds_count") >= 5
    assert 0 < daemon.metric("syncd_event_lag_seconds") < PROPAGATION_LIMIT
    status, body = daemon.ready()
    assert status == 200 and body["events"]["fast_path"] is True
    check = run_once(realm, emulator, tmp_path, "--check", **FAST)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_idle_realm_costs_one_request_per_poll_and_no_litellm_call(
    realm: KeycloakRealm, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    daemon = syncd_daemon(realm, emulator, **FAST)
    daemon.wait_runs(1)
    time.sleep(1.0)
    before_kc = daemon.metric("syncd_http_requests_total", target="keycloak", method="GET",
                              status="200")
    audit_before = len(emulator.audit())
    litellm_before = sum(v for (name, labels), v in daemon.metrics().items()
                         if name == "syncd_http_requests_total"
                         and ("target", "litellm") in labels)
    time.sleep(5.0)
    after_kc = daemon.metric("syncd_http_requests_total", target="keycloak", method="GET",
                             status="200")
    litellm_after = sum(v for (name, labels), v in daemon.metrics().items()
                        if name == "syncd_http_requests_total" and ("target", "litellm") in labels)
    polls = after_kc - before_kc
    assert 6 <= polls <= 12  # every 0.5 s, one request each
    assert litellm_after == litellm_before and len(emulator.audit()) == audit_before


def test_without_view_events_auto_says_why_once_and_reconciles_fully(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)  # view-users only
    realm.enable_admin_events()
    daemon = syncd_daemon(realm, emulator, events={"poll_seconds": 0.5})
    daemon.wait_runs(3)
    said = daemon.named("events_unavailable")
    assert len(said) == 1 and "view-events" in said[0]["reason"]
    assert daemon.metric("syncd_event_fast_path_active") == 0
    assert daemon.ready()[1]["events"]["fast_path"] is False


def test_events_switched_off_in_the_realm_are_said_at_start(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS,
                          service_account_roles=("view-users", "view-events"))
    daemon = syncd_daemon(realm, emulator, events={"poll_seconds": 0.5})
    daemon.wait_runs(2)
    (said,) = daemon.named("events_unavailable")
    assert "does not record admin events" in said["reason"]


def test_enabled_true_without_the_prerequisite_is_a_start_up_error(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    realm.enable_admin_events()
    daemon = syncd_daemon(realm, emulator, wait=False, events={"enabled": "true"})
    assert daemon.wait_exit() == 4
    (failed,) = daemon.named("service_failed")
    assert "events.enabled is true" in failed["error"] and "view-events" in failed["error"]
    assert not daemon.finished_runs()


def test_switching_events_off_is_a_gap_and_forces_a_full_reconcile(
    realm: KeycloakRealm, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    daemon = syncd_daemon(realm, emulator, **{**FAST, "events": {**FAST["events"],
                                                                  "enabled": "auto"}})
    daemon.wait_runs(1)
    set_admin_events(realm, False)
    daemon.wait_runs(2, timeout=20)  # not the hourly schedule: the gap asked for it
    (gap,) = [e for e in daemon.named("event_gap") if e["reason"] == "disabled"]
    assert "does not record admin events" in gap["detail"]
    assert daemon.metric("syncd_event_gaps_total", reason="disabled") == 1
    assert daemon.metric("syncd_event_fast_path_active") == 0

    # Switched back on: followed again, after a full reconcile for what was missed.
    set_admin_events(realm, True)
    daemon.wait_for("the fast path back",
                    lambda: daemon.metric("syncd_event_fast_path_active") == 1, timeout=20)
    daemon.wait_runs(3, timeout=20)
    uid, gid = realm.user_ids(), realm.group_ids()
    key = emulator.generate_key(user_id=uid["alice"], team_id=gid["/llm/research"])["key"]
    realm.remove_user_from_group("alice", "/llm/research")
    refused_within(daemon, emulator, key)


def test_the_fast_path_meets_the_same_brake_as_a_full_reconcile(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    people = [{"username": f"user{i:02}", "email": f"user{i:02}@example.com",
               "groups": ["/llm/big"]} for i in range(30)]
    realm = realm_factory(groups={"/llm/big": {}, "/llm/small": {}}, users=people,
                          service_account_roles=("view-users", "view-events"))
    realm.enable_admin_events()
    daemon = syncd_daemon(realm, emulator, **FAST)
    daemon.wait_runs(1)
    uid = realm.user_ids()
    keys = {u: emulator.generate_key(user_id=uid[u])["key"] for u in uid if u.startswith("user")}
    # One admin call (one event) cuts 30 people off, more than safety.max_blocked
    # (25) allows: deleting their only group.
    realm.delete_group("/llm/big")
    braked = daemon.wait_for(
        "a braked fast-path run",
        lambda: [r for r in daemon.named("fast_path_finished") if r["result"] == "braked"],
        timeout=PROPAGATION_LIMIT,
    )
    assert braked[0]["held_back"] >= 30 and braked[0]["applied"] == 0
    assert all(answers(emulator, key) == 200 for key in keys.values())  # nobody cut off
    assert daemon.named("safety_brake_engaged")


def test_a_failing_fast_path_leaves_the_work_to_a_full_reconcile(
    realm: KeycloakRealm, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    daemon = syncd_daemon(realm, emulator, **FAST)
    daemon.wait_runs(1)
    uid, gid = realm.user_ids(), realm.group_ids()
    key = emulator.generate_key(user_id=uid["alice"], team_id=gid["/llm/research"])["key"]
    # LiteLLM's user rows fail three times: three fast-path runs fail (a scoped
    # run reads the rows of its users, not the whole listing).
    emulator.set_faults([{"path": "/user/info", "error_rate": 1, "error_status": 500,
                          "max_faults": 3}])
    realm.remove_user_from_group("alice", "/llm/research")
    daemon.wait_for("three failed fast-path runs",
                    lambda: daemon.metric("syncd_fast_path_runs_total", result="failure") >= 3,
                    timeout=30)
    # Then the batch is left to a full reconcile, asked for at once (not in an hour).
    daemon.wait_runs(2, timeout=30)
    assert daemon.named("full_reconcile_requested")
    refused_within(daemon, emulator, key)


def test_the_fast_path_finds_users_named_by_username_too(
    realm: KeycloakRealm, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    """With ``users.id_from: username`` the LiteLLM user is not the Keycloak id the
    event names; the fast path still plans for the right person."""
    daemon = syncd_daemon(realm, emulator, **FAST, users={"id_from": "username"})
    daemon.wait_runs(1)
    gid = realm.group_ids()
    research = emulator.generate_key(user_id="alice", team_id=gid["/llm/research"])["key"]
    laptop = emulator.generate_key(user_id="bob", key_alias="bob-laptop")["key"]
    realm.remove_user_from_group("alice", "/llm/research")
    refused_within(daemon, emulator, research)
    realm.disable_user("bob")
    refused_within(daemon, emulator, laptop)
    assert len(daemon.finished_runs()) == 1
