"""Alerting rules: promtool check and unit tests on the plain rules file, the
rendered PrometheusRule built from it, and the runbook each alert links to."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    ALERTS_FILE,
    ALL_ON,
    CRONJOB,
    DEPLOYMENT,
    RUNBOOK,
    load_yaml,
    one,
    render,
    render_error,
)

TESTS_FILE = Path(__file__).with_name("alerts_test.yaml")
DEFAULT_RUNBOOK = "https://git.example.com/platform/syncd/blob/main/docs/runbook.md"
MODE_GROUPS = {"deployment": {"syncd", "syncd-deployment"}, "cronjob": {"syncd", "syncd-cronjob"}}


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


def rules(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def rendered_groups(helm: str, mode_values: Path, *sets: str, **kw: str) -> list[dict[str, Any]]:
    objects = render(helm, mode_values, ALL_ON, sets=sets, **kw)
    return list(one(objects, "PrometheusRule")["spec"]["groups"])


# --- the plain file ---------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    proc = promtool_run(promtool, "check", "rules", str(ALERTS_FILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 8 rules found" in proc.stdout


def test_promtool_unit_tests(promtool: str) -> None:
    proc = promtool_run(promtool, "test", "rules", str(TESTS_FILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_required_alerts_are_there() -> None:
    r = rules(load_yaml(ALERTS_FILE))
    assert set(r) == {
        "SyncdNoRecentSuccess", "SyncdBrakeEngaged", "SyncdDown", "SyncdRepeatedFailures",
        "SyncdHighErrorRate", "SyncdCronJobFailed", "SyncdLastRunHighErrorRate",
        "SyncdEventTailStalled",
    }
    assert "time() - " in r["SyncdNoRecentSuccess"]["expr"]
    assert "syncd_last_success_timestamp_seconds" in r["SyncdNoRecentSuccess"]["expr"]
    assert "syncd_brake_engaged" in r["SyncdBrakeEngaged"]["expr"]
    assert "absent(up{" in r["SyncdDown"]["expr"] and "== 0" in r["SyncdDown"]["expr"]
    assert "syncd_consecutive_failures" in r["SyncdRepeatedFailures"]["expr"]
    assert "kube_job_status_failed" in r["SyncdCronJobFailed"]["expr"]
    for name in ("SyncdHighErrorRate", "SyncdLastRunHighErrorRate"):
        assert 'syncd_http_requests_total{job="syncd", status=~"5..|error"}' in r[name]["expr"]


def test_every_alert_is_documented() -> None:
    runbook = RUNBOOK.read_text(encoding="utf-8")
    # GitHub-style anchors of the runbook's headings.
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", m.group(1).strip().lower()).replace(" ", "-")
        for m in re.finditer(r"^#{1,6} (.+)$", runbook, re.MULTILINE)
    }
    for name, rule in rules(load_yaml(ALERTS_FILE)).items():
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        url = ann["runbook_url"]
        assert url.startswith(DEFAULT_RUNBOOK + "#"), url
        anchor = url.split("#", 1)[1]
        assert anchor in anchors, f"{name}: no heading for #{anchor} in docs/runbook.md"
        assert name in runbook


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = load_yaml(TESTS_FILE)
    assert tests["rule_files"] == ["../../helm/syncd/files/alerts.yaml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = set(rules(load_yaml(ALERTS_FILE)))
    assert firing == names
    assert silent == names


def test_substitution_tokens_are_in_the_file() -> None:
    """templates/_alerts.tpl rewrites these literal strings: they must exist, or
    a value would silently stop having an effect."""
    r = rules(load_yaml(ALERTS_FILE))
    assert r["SyncdNoRecentSuccess"]["expr"].count("900") == 2
    assert ">= 3" in r["SyncdRepeatedFailures"]["expr"]
    assert "> 0.1" in r["SyncdHighErrorRate"]["expr"]
    assert "> 0.1" in r["SyncdLastRunHighErrorRate"]["expr"]
    assert r["SyncdCronJobFailed"]["expr"].count('job_name=~"syncd-[0-9]+"') == 6
    for name, rule in r.items():
        if name != "SyncdCronJobFailed":
            assert 'job="syncd"' in rule["expr"], name
        assert rule["annotations"]["runbook_url"].startswith(DEFAULT_RUNBOOK)


# --- the PrometheusRule rendered from it ----------------------------------------------


@pytest.mark.parametrize(("mode", "values"), [("deployment", DEPLOYMENT), ("cronjob", CRONJOB)])
def test_rendered_rules_are_the_plain_rules_for_the_mode(
    helm: str, promtool: str, mode: str, values: Path, tmp_path: Path
) -> None:
    """For a release named syncd with the plain file's defaults, the chart renders
    exactly the plain file's groups for the mode; the promtool unit tests of those
    alerts pass against the rendered rules too."""
    sets = ["prometheusRule.additionalAlertLabels=null"]
    if mode == "cronjob":
        sets.append("prometheusRule.noRecentSuccess.intervalSeconds=300")
    groups = rendered_groups(helm, values, *sets)
    plain = [g for g in load_yaml(ALERTS_FILE)["groups"] if g["name"] in MODE_GROUPS[mode]]
    assert [g["name"] for g in groups] == [g["name"] for g in plain]
    got, want = rules({"groups": groups}), rules({"groups": plain})
    assert set(got) == set(want)
    for name in want:
        expected = dict(want[name])
        # The chart scopes kube-state-metrics series to the release namespace.
        expected["expr"] = expected["expr"].replace(
            'job_name=~"syncd-[0-9]+"', 'namespace="syncd", job_name=~"syncd-[0-9]+"'
        )
        assert got[name] == expected, name

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    tests = load_yaml(TESTS_FILE)
    tests["rule_files"] = [str(rules_file)]
    tests["tests"] = [
        case for case in tests["tests"]
        if all(c["alertname"] in got for c in case["alert_rule_test"])
    ]
    assert tests["tests"]
    tests_file = tmp_path / "tests.yaml"
    tests_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    proc = promtool_run(promtool, "test", "rules", str(tests_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("mode", "values"), [("deployment", DEPLOYMENT), ("cronjob", CRONJOB)])
def test_rendered_rules_follow_the_values(
    helm: str, promtool: str, mode: str, values: Path, tmp_path: Path
) -> None:
    groups = rendered_groups(
        helm,
        values,
        "metrics.job=syncd-prod",
        "prometheusRule.noRecentSuccess.intervals=4",
        "config.schedule.interval_seconds=600",
        "cronjob.intervalSeconds=3600",
        "prometheusRule.repeatedFailures.threshold=5",
        "prometheusRule.errorRate.ratio=0.25",
        "prometheusRule.runbookBaseUrl=https://docs.example.org/syncd/runbook.md",
        "prometheusRule.alerts.SyncdBrakeEngaged.severity=critical",
        "prometheusRule.alerts.SyncdBrakeEngaged.for=2m",
        release="prod",
        namespace="identity",
    )
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    proc = promtool_run(promtool, "check", "rules", str(rules_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    r = rules({"groups": groups})
    for name, rule in r.items():
        assert 'job="syncd"' not in rule["expr"], name
        assert rule["labels"]["team"] == "platform"  # ci/all-on-values.yaml
        assert rule["annotations"]["runbook_url"].startswith(
            "https://docs.example.org/syncd/runbook.md#"
        )
    threshold = 4 * (600 if mode == "deployment" else 3600)
    assert f"[{threshold}s])) > {threshold}" in r["SyncdNoRecentSuccess"]["expr"]
    assert 'job="syncd-prod"' in r["SyncdNoRecentSuccess"]["expr"]
    assert r["SyncdBrakeEngaged"]["labels"]["severity"] == "critical"
    assert r["SyncdBrakeEngaged"]["for"] == "2m"
    if mode == "deployment":
        assert set(r) == {
            "SyncdNoRecentSuccess", "SyncdBrakeEngaged", "SyncdDown", "SyncdRepeatedFailures",
            "SyncdHighErrorRate", "SyncdEventTailStalled",
        }
        assert ">= 5" in r["SyncdRepeatedFailures"]["expr"]
        assert "> 0.25" in r["SyncdHighErrorRate"]["expr"]
        assert 'absent(up{job="syncd-prod"})' in r["SyncdDown"]["expr"]
    else:
        assert set(r) == {
            "SyncdNoRecentSuccess", "SyncdBrakeEngaged", "SyncdCronJobFailed",
            "SyncdLastRunHighErrorRate",
        }
        assert "> 0.25" in r["SyncdLastRunHighErrorRate"]["expr"]
        expr = r["SyncdCronJobFailed"]["expr"]
        assert expr.count('namespace="identity", job_name=~"prod-syncd-[0-9]+"') == 6


def test_alert_can_be_disabled(helm: str) -> None:
    groups = rendered_groups(
        helm, DEPLOYMENT, "prometheusRule.alerts.SyncdBrakeEngaged.enabled=false"
    )
    assert "SyncdBrakeEngaged" not in rules({"groups": groups})
    assert "SyncdNoRecentSuccess" in rules({"groups": groups})


def test_schedule_cron_needs_an_explicit_interval(helm: str) -> None:
    err = render_error(helm, DEPLOYMENT, ALL_ON, sets=("config.schedule.cron=0 * * * *",))
    assert "prometheusRule.noRecentSuccess.intervalSeconds" in err
    groups = rendered_groups(
        helm, DEPLOYMENT,
        "config.schedule.cron=0 * * * *", "prometheusRule.noRecentSuccess.intervalSeconds=3600",
    )
    assert "> 10800" in rules({"groups": groups})["SyncdNoRecentSuccess"]["expr"]
