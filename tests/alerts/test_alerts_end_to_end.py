"""The chart's alerts, end to end: a real Prometheus, the real daemon, real Keycloak.

The rules are rendered by ``helm template`` with durations and thresholds
shortened through chart values (never edited by hand), loaded into Debian's
Prometheus (1 s scrape and evaluation), which scrapes the real ``syncd``
daemon (2 s schedule) syncing the session's Keycloak (behind a proxy the
test can shut) into the LiteLLM emulator. Every state is read back through
Prometheus' HTTP API. The CronJob path pushes ``syncd --once --push-metrics``
into a real Pushgateway scraped by the same kind of Prometheus.

The sequence of alert states each test observed is printed (``-s``) and
written to ``alert-sequence.txt`` in the test's tmp dir.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from syncd.apply import SINGLE_ATTEMPTS
from tests.alerts.conftest import (
    AlertRecorder,
    JobStatusExporter,
    PrometheusServer,
    render_rules,
)
from tests.deploy.conftest import CRONJOB, DASHBOARD_FILE, DEPLOYMENT, REPO, RUNBOOK
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.fixtures.latency_proxy import LatencyProxy
from tests.service.conftest import SyncdProcess, run_once, syncd_config, syncd_env

pytestmark = pytest.mark.integration

INTERVAL = 2  # the daemon's schedule, seconds
GROUPS: dict[str, dict[str, str]] = {"/llm/research": {}}
USERS = [
    {"username": f"user{i}", "email": f"user{i}@example.com", "groups": ["/llm/research"]}
    for i in range(4)
]
# Removed at once to engage the brake (limits below are 1).
LEAVERS = ["user1", "user2", "user3"]

RUNBOOK_BASE = f"file://{RUNBOOK}"

# The chart's values that shorten the rules for a test that lasts a minute. Every
# alert with a `for:` keeps one (2 s, so that "pending" is observable at a 1 s
# evaluation interval); SyncdBrakeEngaged keeps the chart's `for: 0m`.
DEPLOYMENT_SETS = {
    "prometheusRule.enabled": "true",
    "prometheusRule.runbookBaseUrl": RUNBOOK_BASE,
    "prometheusRule.noRecentSuccess.intervalSeconds": str(INTERVAL),
    "prometheusRule.noRecentSuccess.intervals": "4",
    "prometheusRule.repeatedFailures.threshold": "2",
    "prometheusRule.errorRate.window": "15s",
    "prometheusRule.alerts.SyncdNoRecentSuccess.for": "2s",
    "prometheusRule.alerts.SyncdDown.for": "2s",
    "prometheusRule.alerts.SyncdRepeatedFailures.for": "2s",
    "prometheusRule.alerts.SyncdHighErrorRate.for": "2s",
}
CRON_SETS = {
    "prometheusRule.enabled": "true",
    "prometheusRule.runbookBaseUrl": RUNBOOK_BASE,
    "cronjob.intervalSeconds": "4",
    "prometheusRule.noRecentSuccess.intervals": "2",
    "prometheusRule.alerts.SyncdNoRecentSuccess.for": "1s",
    "prometheusRule.alerts.SyncdCronJobFailed.for": "1s",
}


def runbook_anchors() -> set[str]:
    """GitHub-style anchors of docs/runbook.md's headings."""
    anchors = set()
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^#{1,6}\s+(.*?)\s*$", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def check_runbook_urls(recorder: AlertRecorder) -> set[str]:
    """Every alert that fired links to an existing section of docs/runbook.md."""
    anchors = runbook_anchors()
    names = set()
    for (name, _), alert in recorder.fired.items():
        url = alert["annotations"].get("runbook_url", "")
        parts = urlsplit(url)
        assert parts.scheme == "file" and Path(parts.path) == RUNBOOK, (name, url)
        assert Path(parts.path).is_file(), url
        assert parts.fragment in anchors, (name, url, sorted(anchors))
        names.add(name)
    return names


def firing(recorder: AlertRecorder, name: str) -> bool:
    return "firing" in recorder.state(name)


def scraped(prometheus: PrometheusServer, expr: str) -> bool:
    return bool(prometheus.query(expr))


def daemon_config(realm: KeycloakRealm, emulator: EmulatorAdmin) -> dict[str, Any]:
    return syncd_config(realm, emulator, {
        "schedule": {"interval_seconds": INTERVAL, "jitter_seconds": 0,
                     "shutdown_timeout_seconds": 10},
        "readiness": {"max_consecutive_failures": 2, "max_success_age_seconds": 600},
        "keycloak": {"timeout_seconds": 2},
        "retries": {"max_attempts": 3, "initial_backoff_seconds": 0.05,
                    "max_backoff_seconds": 0.2},
        "safety": {"max_blocked": 1, "max_deleted": 1},
    })


def test_daemon_alerts_fire_and_clear(
    helm: str, prometheus_bin: str, realm_factory: RealmFactory, emulator: EmulatorAdmin,
    keycloak_proxy: LatencyProxy, tmp_path: Path,
) -> None:
    groups = render_rules(helm, DEPLOYMENT, DEPLOYMENT_SETS)
    assert {g["name"] for g in groups} == {"syncd", "syncd-deployment"}
    rendered = {r["alert"]: r for g in groups for r in g["rules"]}
    assert "[15s]" in rendered["SyncdHighErrorRate"]["expr"]  # the window value took effect

    realm = dataclasses.replace(
        realm_factory(groups=GROUPS, users=USERS), url=keycloak_proxy.url
    )
    workdir = tmp_path / "syncd"
    workdir.mkdir()
    daemon = SyncdProcess(workdir, daemon_config(realm, emulator),
                          syncd_env(realm, emulator.master_key))
    prometheus: PrometheusServer | None = None
    recorder: AlertRecorder | None = None
    try:
        daemon.wait_started()
        daemon.wait_runs(1)
        prometheus = PrometheusServer(prometheus_bin, tmp_path / "prometheus", [
            {"job_name": "syncd", "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}]},
        ])
        start = time.time()
        p = prometheus
        p.load_rules(groups, set(rendered))
        recorder = AlertRecorder(prometheus)

        # -- healthy: a success scraped, then no alert pending or firing.
        recorder.mark("healthy daemon")
        p.wait("a scraped success", lambda: scraped(
            p, 'up{job="syncd"} == 1 and on () syncd_consecutive_failures{job="syncd"} == 0'
            ' and on () syncd_last_success_timestamp_seconds{job="syncd"} > 0'))
        p.wait("no alert active", lambda: not p.alerts(), timeout=10)
        # A user joins, and the write adding them fails in that run (a 500 each of
        # the SINGLE_ATTEMPTS times the applier sends it): that run is partial, the
        # next one repairs it; one read gets a
        # 503 and is retried. A failed write and a retry page nobody, and the
        # dashboard's change, failure and retry panels get data.
        recorder.mark("a user joins; adding them fails once, a read is retried")
        emulator.set_faults([
            {"path": "/team/member_add", "error_rate": 1.0, "error_status": 500,
             "max_faults": SINGLE_ATTEMPTS},
            {"path": "*", "method": "GET", "error_rate": 1.0, "error_status": 503,
             "max_faults": 1},
        ])
        realm.create_user("joiner", email="joiner@example.com", groups=["/llm/research"])
        p.wait("the failed write, then the repair, scraped", lambda: scraped(
            p, 'syncd_operation_failures_total{job="syncd", operation="add_member"} > 0'
            ' and on () syncd_changes_total{job="syncd", operation="add_member"} > 4'), timeout=20)
        quiet_until = time.monotonic() + 2
        while time.monotonic() < quiet_until:
            assert not p.alerts(), p.alerts()
            time.sleep(0.25)
        assert daemon.ready()[0] == 200

        # -- Keycloak stopped: pending, then firing; /readyz 503; no LiteLLM write.
        writes_before = len(emulator.audit())
        recorder.mark("Keycloak stopped")
        keycloak_proxy.shut()
        failure_alerts = ["SyncdRepeatedFailures", "SyncdHighErrorRate", "SyncdNoRecentSuccess"]
        p.wait("the failure alerts firing",
               lambda: all(firing(recorder, a) for a in failure_alerts), timeout=40)
        for name in failure_alerts:
            seen = recorder.states_seen(name)
            assert seen[:2] == ["pending", "firing"], (name, seen)
        high = [labels for (n, labels) in recorder.fired if n == "SyncdHighErrorRate"]
        assert {dict(labels)["target"] for labels in high} == {"keycloak"}
        # A LiteLLM read cancelled because Keycloak failed is no LiteLLM error.
        assert not p.query('syncd_http_requests_total{job="syncd", target="litellm",'
                           ' status="error"} > 0')
        status, body = daemon.ready()
        assert status == 503, body
        assert len(emulator.audit()) == writes_before, emulator.audit()[writes_before:]
        assert p.query('syncd_errors_total{job="syncd", stage="keycloak"} > 0')

        # -- Keycloak back: every alert resolves.
        recorder.mark("Keycloak back")
        keycloak_proxy.open()
        p.wait("every alert resolved", lambda: not recorder.active(), timeout=40)
        for name in failure_alerts:
            assert recorder.states_seen(name)[-1] == "resolved", name
        daemon.wait_for("/readyz 200", lambda: daemon.ready()[0] == 200, timeout=10)

        # -- the brake: a mass removal in Keycloak. The alert names no user.
        recorder.mark(f"{len(LEAVERS)} users removed from their group (brake limits 1)")
        for username in LEAVERS:
            realm.remove_user_from_group(username, "/llm/research")
        p.wait("SyncdBrakeEngaged firing", lambda: firing(recorder, "SyncdBrakeEngaged"))
        brake = [a for (n, _), a in recorder.fired.items() if n == "SyncdBrakeEngaged"]
        identities = [*realm.user_ids().values(), "joiner", "joiner@example.com"]
        identities += [str(u[k]) for u in USERS for k in ("username", "email")]
        text = json.dumps(brake)
        for identity in identities:
            assert identity not in text, (identity, brake)
        assert p.query('syncd_held_back_operations{job="syncd"} > 0')

        # -- the daemon killed: the target-down alert fires.
        recorder.mark("daemon killed (SIGKILL)")
        daemon.signal(signal.SIGKILL)
        daemon.proc.wait(10)
        p.wait("SyncdDown firing", lambda: firing(recorder, "SyncdDown"), timeout=20)
        assert recorder.states_seen("SyncdDown")[-2:] == ["pending", "firing"]

        fired = check_runbook_urls(recorder)
        assert fired == {*failure_alerts, "SyncdBrakeEngaged", "SyncdDown"}
        check_dashboard(p, start, time.time())
    finally:
        if recorder is not None:
            recorder.close(tmp_path / "alert-sequence.txt", "daemon (deployment mode)")
        if prometheus is not None:
            prometheus.close()
        daemon.close()


# Panels whose data must not only exist but be non-zero for this run.
NON_ZERO = {
    "Managed teams", "Managed members", "Held back", "Changes by operation",
    "Failed operations by kind", "Errors by stage", "Retries by target",
    "Requests by target and status", "Error ratio by target", "Versions",
}


def check_dashboard(prometheus: PrometheusServer, start: float, end: float) -> None:
    """Every panel expression, as Grafana would send it over the run, returns data."""
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$job", "syncd")
                    .replace("$__rate_interval", "10s"))
            result = prometheus.query_range(expr, start, end)
            assert result, f"panel {panel['title']!r}: no data for {expr}"
            values = [float(v) for series in result for _, v in series["values"]
                      if v not in ("NaN", "+Inf", "-Inf")]
            if panel["title"] in NON_ZERO:
                assert any(v > 0 for v in values), f"panel {panel['title']!r}: all zero: {expr}"
            checked += 1
    assert checked >= 20


def test_cronjob_alerts_fire_and_clear(
    helm: str, prometheus_bin: str, pushgateway: str, realm_factory: RealmFactory,
    emulator: EmulatorAdmin, keycloak_proxy: LatencyProxy, tmp_path: Path,
) -> None:
    groups = render_rules(helm, CRONJOB, CRON_SETS)
    assert {g["name"] for g in groups} == {"syncd", "syncd-cronjob"}
    realm = dataclasses.replace(
        realm_factory(groups=GROUPS, users=USERS[:1]), url=keycloak_proxy.url
    )
    jobs = JobStatusExporter(namespace="syncd", cronjob="syncd")
    prometheus = PrometheusServer(prometheus_bin, tmp_path / "prometheus", [
        {"job_name": "pushgateway", "honor_labels": True,
         "static_configs": [{"targets": [pushgateway.removeprefix("http://")]}]},
        {"job_name": "kube-state-metrics", "honor_labels": True,
         "static_configs": [{"targets": [f"127.0.0.1:{jobs.port}"]}]},
    ])
    prometheus.load_rules(groups, {r["alert"] for g in groups for r in g["rules"]})
    recorder = AlertRecorder(prometheus)
    p = prometheus

    def cron_run(expect: int) -> None:
        """One Job of the CronJob: `syncd --once --push-metrics`, as the chart runs it."""
        started = time.time()
        result = run_once(
            realm, emulator, tmp_path, "--push-metrics",
            pushgateway={"url": pushgateway, "job": "syncd"},
            keycloak={"timeout_seconds": 2},
            retries={"max_attempts": 2, "initial_backoff_seconds": 0.05},
        )
        assert result.returncode == expect, result.stderr[-3000:]
        assert '"event": "metrics_pushed"' in result.stderr
        job = jobs.record(started, result.returncode)
        recorder.mark(f"cron run {job} exited {result.returncode}")

    try:
        recorder.mark("cron run against a healthy Keycloak")
        cron_run(0)
        p.wait("the pushed success scraped", lambda: scraped(
            p, 'syncd_runs_total{job="syncd", result="success"} == 1'
            ' and on () kube_job_status_succeeded == 1'))
        quiet_until = time.monotonic() + 2
        while time.monotonic() < quiet_until:
            assert not p.alerts(), p.alerts()
            time.sleep(0.25)

        recorder.mark("Keycloak stopped")
        keycloak_proxy.shut()
        cron_run(4)
        cron_alerts = ["SyncdCronJobFailed", "SyncdNoRecentSuccess"]
        p.wait("the cron alerts firing",
               lambda: all(firing(recorder, a) for a in cron_alerts), timeout=30)
        for name in cron_alerts:
            assert recorder.states_seen(name)[:2] == ["pending", "firing"], name
        assert p.query('syncd_runs_total{job="syncd", result="failure"} == 1')

        recorder.mark("Keycloak back")
        keycloak_proxy.open()
        cron_run(0)
        p.wait("the cron alerts resolved", lambda: not recorder.active(), timeout=20)
        for name in cron_alerts:
            assert recorder.states_seen(name)[-1] == "resolved", name
        assert check_runbook_urls(recorder) == set(cron_alerts)
    finally:
        recorder.close(tmp_path / "alert-sequence.txt", "CronJob mode (Pushgateway)")
        prometheus.close()
        jobs.close()


def test_runbook_anchor_check_catches_a_missing_section() -> None:
    """The anchor check above is not vacuous: headings become GitHub anchors."""
    anchors = runbook_anchors()
    assert "syncddown" in anchors and "syncdbrakeengaged" in anchors
    assert "no-such-section" not in anchors
    assert REPO in RUNBOOK.parents
    assert httpx.URL(RUNBOOK_BASE + "#syncddown").fragment == "syncddown"
