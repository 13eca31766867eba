"""SIGTERM/SIGINT: no new run, the run in flight finishes (bounded), exit 0; overruns."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from devtools.litellm_emulator.admin import EmulatorAdmin
from tests.fixtures.keycloak import RealmFactory
from tests.service.conftest import (
    SYNCD_BIN,
    DaemonFactory,
    SyncdProcess,
    run_once,
    syncd_config,
    syncd_env,
)
from tests.service.test_daemon import check_run_ids

pytestmark = pytest.mark.integration

GROUPS: dict[str, dict[str, str]] = {"/llm/research": {}, "/llm/ops": {}}
USERS = [
    {"username": "alice", "email": "alice@example.com", "groups": ["/llm/research"]},
    {"username": "bob", "email": "bob@example.com", "groups": ["/llm/ops", "/llm/research"]},
]


def slow_writes(emulator: EmulatorAdmin, ms: float) -> None:
    """Every write to the emulated API takes ``ms``; reads stay fast."""
    emulator.set_faults([{"path": "*", "method": "POST", "latency_ms": ms}])


def slow_reads(emulator: EmulatorAdmin, ms: float) -> None:
    """Every read takes ``ms``. For runs that get cancelled: the emulator finishes a
    request whose client went away, and a late read, unlike a late write, cannot
    change the state another test sees."""
    emulator.set_faults([{"path": "*", "method": "GET", "latency_ms": ms}])


def wait_for_request(daemon: SyncdProcess, emulator: EmulatorAdmin, kind: str) -> None:
    """Until the first run's first read or write has reached the emulator (and is delayed)."""
    daemon.wait_for(
        f"a {kind[:-1]} in flight", lambda: emulator.counters()["total"][kind] > 0,
        timeout=30, interval=0.05,
    )


def event_names(daemon: SyncdProcess) -> list[str]:
    return [str(e["event"]) for e in daemon.events()]


def test_sigterm_stops_starting_writes_and_none_arrives_after_exit(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory,
    tmp_path: Path,
) -> None:
    """The daemon on SIGTERM, like --once: no new write starts, the writes on the
    wire finish, the summary counts exactly what reached LiteLLM, and nothing
    reaches LiteLLM after the process has exited (issue 20: the daemon used to
    start writes until the shutdown timeout, then cut them off mid-flight)."""
    people = [{"username": f"u{i:02}", "email": f"u{i:02}@example.com",
               "groups": ["/llm/research"]} for i in range(40)]
    realm = realm_factory(groups=GROUPS, users=people)
    slow_writes(emulator, 300)  # 40 user creations, 2 at a time: ~6 s
    daemon = syncd_daemon(realm, emulator, litellm={"concurrency": 2},
                          schedule={"shutdown_timeout_seconds": 30})
    daemon.wait_for("writes under way", lambda: emulator.counters()["total"]["writes"] >= 4,
                    timeout=60, interval=0.02)
    daemon.signal(signal.SIGTERM)
    # While the writes in flight drain, the daemon says it is going away but still serves.
    daemon.wait_for("draining", lambda: daemon.named("shutdown_waiting_for_run"))
    status, body = daemon.ready()
    assert (status, body["status"]) == (503, "not ready: shutting down")
    assert daemon.get("/healthz").json()["status"] == "stopping"
    started = time.monotonic()
    assert daemon.wait_exit() == 0
    assert time.monotonic() - started < 5, "waited for writes in flight only, not for the run"
    at_exit = len(emulator.audit())
    time.sleep(2)  # a write cancelled mid-flight would land now
    assert len(emulator.audit()) == at_exit, "a write reached LiteLLM after the process exited"

    names = event_names(daemon)
    assert names.count("sync_started") == 1, "no new run may start after SIGTERM"
    assert names.index("shutdown_requested") < names.index("sync_finished")
    assert names.index("sync_finished") < names.index("service_stopped")
    assert "sync_interrupted" in names
    assert "shutdown_timeout" not in names and "run_cancelled" not in names
    (summary,) = daemon.finished_runs()
    assert 0 < at_exit < 40, "stopped mid-apply"
    assert summary["ll_writes"] == summary["applied"] == at_exit, (summary, at_exit)
    assert summary["result"] == "partial" and summary["failed"] == 0
    assert summary["not_started"] > 0
    assert emulator.state()["consistency_problems"] == []
    check_run_ids(daemon)
    emulator.clear_faults()
    rerun = run_once(realm, emulator, tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{summary['planned'] - summary['applied']} change(s) applied, 0 failed" in rerun.stdout


def test_sigterm_during_reads_abandons_them_at_once(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    """Nothing is written before the reads end, so there is nothing to wait for."""
    realm = realm_factory(groups=GROUPS, users=USERS)
    slow_reads(emulator, 10_000)
    daemon = syncd_daemon(realm, emulator, schedule={"shutdown_timeout_seconds": 30})
    wait_for_request(daemon, emulator, "reads")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=15) == 0
    assert time.monotonic() - started < 5
    names = event_names(daemon)
    assert "shutdown_timeout" not in names and "service_stopped" in names
    (summary,) = daemon.finished_runs()  # the stopped run is still summarised
    assert summary["result"] == "failure" and summary["ll_writes"] == 0


CUT_OFF_WRITE_MS = 5_000
"""Writes this slow are still in flight when the tests below cut them off. The
emulator finishes such a request after its client has gone (a real proxy would
too), so each test waits that long before it ends: the late write must land in
its own audit log, not in the next test's."""


def let_cut_off_writes_land() -> None:
    time.sleep(CUT_OFF_WRITE_MS / 1000 + 0.5)


def test_sigterm_waits_at_most_the_shutdown_timeout(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    slow_writes(emulator, CUT_OFF_WRITE_MS)
    daemon = syncd_daemon(realm, emulator, schedule={"shutdown_timeout_seconds": 1})
    wait_for_request(daemon, emulator, "writes")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=15) == 0
    assert time.monotonic() - started < 8
    names = event_names(daemon)
    assert names.index("shutdown_timeout") < names.index("run_cancelled")
    (summary,) = daemon.finished_runs()  # the cancelled run is still summarised
    assert summary["result"] == "failure" and summary["interrupted"] > 0
    assert "service_stopped" in names
    let_cut_off_writes_land()


def test_second_signal_cancels_the_run(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    slow_writes(emulator, CUT_OFF_WRITE_MS)
    daemon = syncd_daemon(realm, emulator, schedule={"shutdown_timeout_seconds": 60})
    wait_for_request(daemon, emulator, "writes")
    daemon.signal(signal.SIGINT)
    daemon.wait_for("draining", lambda: daemon.named("shutdown_waiting_for_run"))
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit(timeout=15) == 0
    names = event_names(daemon)
    assert "shutdown_forced" in names and "run_cancelled" in names
    assert "shutdown_timeout" not in names
    let_cut_off_writes_land()


def test_overrunning_runs_are_skipped_and_counted(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, syncd_daemon: DaemonFactory
) -> None:
    """Every request takes 0.4 s and a run needs several: longer than the 1 s interval."""
    realm = realm_factory(groups=GROUPS, users=USERS)
    emulator.set_faults([{"path": "*", "latency_ms": 400}])
    daemon = syncd_daemon(realm, emulator)
    daemon.wait_for("an overrun", lambda: daemon.metric("syncd_run_overruns_total") >= 1)
    daemon.wait_runs(2)
    assert daemon.named("run_overrun")
    emulator.clear_faults()
    daemon.signal()
    assert daemon.wait_exit() == 0
    # Runs never overlapped (check_run_ids fails on a sync_started inside a run).
    assert check_run_ids(daemon) >= 2
    runs = daemon.finished_runs()
    # The run in flight at SIGTERM stops starting writes (and abandons its reads):
    # only that last one may end interrupted.
    assert all(r["result"] == "success" for r in runs[:-1])
    assert runs[-1]["result"] == "success" or daemon.named("sync_interrupted")
    assert runs[0]["duration"] > 1  # the first run creates everything: slow
    # The overrun was a scheduled time that came while the first run was going.
    first_start = daemon.named("sync_started")[0]["timestamp"]
    overrun = daemon.named("run_overrun")[0]
    assert first_start < overrun["timestamp"] < runs[0]["timestamp"]


def test_sigterm_to_once_mid_apply_counts_the_writes_made(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    """`syncd --once` stopped by SIGTERM mid-apply: it starts no new write, lets the
    ones in flight finish, and its summary counts exactly what reached LiteLLM (the
    emulator's audit log); the next run completes the work."""
    people = [{"username": f"u{i:02}", "email": f"u{i:02}@example.com",
               "groups": ["/llm/research"]} for i in range(40)]
    realm = realm_factory(groups=GROUPS, users=people)
    slow_writes(emulator, 150)  # 40 user creations, 2 at a time: ~3 s
    config = tmp_path / "once.yaml"
    config.write_text(yaml.safe_dump(syncd_config(realm, emulator,
                                                  {"litellm": {"concurrency": 2}})))
    proc = subprocess.Popen(
        [str(SYNCD_BIN), "--config", str(config), "--once"], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=syncd_env(realm, emulator.master_key),
    )
    deadline = time.monotonic() + 60
    while emulator.counters()["total"]["writes"] < 4:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (summary,) = [e for e in events if e["event"] == "sync_finished"]
    audit = emulator.audit()
    assert proc.returncode == 143, out + err  # 128 + SIGTERM, as a shell reports it
    assert 0 < len(audit) < 40, "stopped mid-apply"
    assert summary["ll_writes"] == len(audit), (summary, len(audit))
    assert summary["applied"] == len(audit)  # each user creation is one write
    assert summary["failed"] == 0 and summary["result"] == "partial"
    assert f"{len(audit)} change(s) applied" in out
    assert any(e["event"] == "sync_interrupted" for e in events)
    emulator.clear_faults()
    rerun = run_once(realm, emulator, tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    rest = summary["planned"] - summary["applied"]
    assert f"{rest} change(s) applied, 0 failed" in rerun.stdout  # exactly the rest
