"""Every metric and label that the alerts and the Grafana dashboard query exists
in syncd's registry (`syncd.metrics.Metrics`); the dashboard shows what the
issue asked for and is well-formed."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from syncd.metrics import Metrics
from tests.deploy.conftest import ALERTS_FILE, DASHBOARD_FILE, load_yaml

# Labels Prometheus attaches to every scraped or pushed series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
# Series from outside syncd that the rules use, with the labels they carry.
EXTERNAL = {
    "up": {"job", "instance"},
    "kube_job_status_failed": {"namespace", "job_name", "job", "instance"},
    "kube_job_status_succeeded": {"namespace", "job_name", "job", "instance"},
    "kube_job_status_active": {"namespace", "job_name", "job", "instance"},
    "kube_job_status_start_time": {"namespace", "job_name", "job", "instance"},
}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregations may be followed by `by (...)` instead of their parenthesis.
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def registry_metrics() -> dict[str, set[str]]:
    """Series names syncd exports, each with its label names."""
    metrics = Metrics()
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    # Families with labels but no children yet export no samples: derive the
    # series names from the type, the labels from the metric object.
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        labels = set(obj._labelnames)
        (family,) = obj.describe()
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "info": ["_info"],
        }.get(family.type, [""])
        for suffix in suffixes:
            extra = {"le"} if suffix == "_bucket" else set()
            names.setdefault(family.name + suffix, set()).update(labels | extra)
    return names


def parse_promql(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """Metric selectors (name, matcher label names) and the grouping labels of a
    PromQL expression. Good enough for the expressions we write, not a parser."""
    selectors: list[tuple[str, set[str]]] = []
    grouping: set[str] = set()
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c == '"':
            j = i + 1
            while j < n and expr[j] != '"':
                j += 2 if expr[j] == "\\" else 1
            i = j + 1
        elif c == "[":
            i = expr.index("]", i) + 1
        elif c == "{":  # a selector without a name: {job="x"}
            j = expr.index("}", i)
            selectors.append(("", set(MATCHER.findall(expr[i:j]))))
            i = j + 1
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            while i < n and (expr[i].isalnum() or expr[i] == "."):
                i += 1
        elif c == "$":  # a Grafana variable outside braces/brackets
            i += 1
            while i < n and (expr[i].isalnum() or expr[i] == "_"):
                i += 1
        elif m := IDENT.match(expr, i):
            word = m.group(0)
            i = m.end()
            rest = expr[i:].lstrip()
            if word in GROUPING:
                if rest.startswith("("):
                    start = expr.index("(", i)
                    end = expr.index(")", start)
                    grouping |= {w.strip() for w in expr[start + 1 : end].split(",") if w.strip()}
                    i = end + 1
            elif word.lower() in KEYWORDS or word in AGGREGATIONS or rest.startswith("("):
                continue  # operator keyword or function call
            else:
                labels: set[str] = set()
                if expr[i:].startswith("{"):
                    j = expr.index("}", i)
                    labels = set(MATCHER.findall(expr[i:j]))
                    i = j + 1
                selectors.append((word, labels))
        else:
            i += 1
    return selectors, grouping


def alert_exprs() -> dict[str, str]:
    return {
        f"alert {r['alert']}": r["expr"]
        for g in load_yaml(ALERTS_FILE)["groups"]
        for r in g["rules"]
    }


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_FILE.read_text(encoding="utf-8")))


def dashboard_exprs() -> dict[str, str]:
    exprs = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            exprs[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return exprs


def all_exprs() -> dict[str, str]:
    return {**alert_exprs(), **dashboard_exprs()}


def test_parser_sees_metrics_labels_and_grouping() -> None:
    selectors, grouping = parse_promql(
        'sum by (target, le) (rate(syncd_http_request_duration_seconds_bucket{job=~"$job"}'
        '[$__rate_interval])) / on (job) group_left () up{job="x", instance!=""} > 0.1 '
        "and time() - syncd_last_success_timestamp_seconds > 900"
    )
    assert selectors == [
        ("syncd_http_request_duration_seconds_bucket", {"job"}),
        ("up", {"job", "instance"}),
        ("syncd_last_success_timestamp_seconds", set()),
    ]
    assert grouping == {"target", "le", "job"}


@pytest.mark.parametrize(("where", "expr"), sorted(all_exprs().items()))
def test_metrics_exist_in_the_registry(where: str, expr: str) -> None:
    known = registry_metrics()
    selectors, grouping = parse_promql(expr)
    names = [name for name, _ in selectors if name]
    assert names, f"{where}: no metric found in {expr!r}"
    allowed_labels = set(TARGET_LABELS)
    for name, labels in selectors:
        if name.startswith("syncd_"):
            assert name in known, f"{where}: {name} is not exported by syncd.metrics.Metrics"
            allowed_labels |= known[name]
            unknown = labels - known[name] - TARGET_LABELS
        else:
            assert name in EXTERNAL, f"{where}: unexpected metric {name}"
            allowed_labels |= EXTERNAL[name]
            unknown = labels - EXTERNAL[name]
        assert not unknown, f"{where}: {name} has no label(s) {sorted(unknown)}"
    assert grouping <= allowed_labels, f"{where}: grouping by {sorted(grouping - allowed_labels)}"


def test_dashboard_variables_use_exported_metrics() -> None:
    known = registry_metrics()
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"]["query"])
        assert m, var["query"]
        assert m.group(1) in known
        assert m.group(2) in known[m.group(1)] | TARGET_LABELS


def test_registry_has_the_contract_names() -> None:
    """The names the issue lists; a rename in syncd/metrics.py must fail here."""
    known = registry_metrics()
    for name, labels in {
        "syncd_runs_total": {"result"},
        "syncd_run_duration_seconds_bucket": {"le"},
        "syncd_last_run_timestamp_seconds": set(),
        "syncd_last_success_timestamp_seconds": set(),
        "syncd_changes_total": {"operation"},
        "syncd_operation_failures_total": {"operation"},
        "syncd_errors_total": {"stage"},
        "syncd_brake_engaged": set(),
        "syncd_held_back_operations": set(),
        "syncd_unconfirmed_operations_total": {"operation"},
        "syncd_managed_teams": set(),
        "syncd_managed_members": set(),
        "syncd_pending_changes": set(),
        "syncd_consecutive_failures": set(),
        "syncd_run_overruns_total": set(),
        "syncd_http_requests_total": {"target", "method", "status"},
        "syncd_http_request_duration_seconds_bucket": {"target", "method", "le"},
        "syncd_http_retries_total": {"target"},
        "syncd_build_info": {"version", "python"},
    }.items():
        assert name in known, name
        assert labels == known[name], (name, known[name])


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = list(dashboard_exprs().values())

    def has(metric: str, by: str | None = None) -> bool:
        return any(
            metric in e and (by is None or re.search(rf"by \({by}\)", e)) for e in exprs
        )

    assert has("syncd_runs_total", by="result"), "runs by result"
    assert has("syncd_run_duration_seconds_bucket"), "duration"
    assert has("syncd_changes_total", by="operation"), "changes by operation"
    assert has("syncd_errors_total", by="stage"), "errors by stage"
    assert any("time() - max(syncd_last_success_timestamp_seconds" in e for e in exprs), "age"
    assert has("syncd_managed_teams") and has("syncd_managed_members"), "teams and members"
    assert has("syncd_brake_engaged"), "brake status"


def test_dashboard_is_well_formed() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] == "syncd"
    assert isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert 'job=~"$job"' in t["expr"], (p["title"], t["expr"])
