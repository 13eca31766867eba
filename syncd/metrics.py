"""One Prometheus registry for everything syncd exports.

Names are a contract with the alerts in helm/ and the Grafana dashboard (a
test checks every query there against this registry), so rename nothing
casually. Labels carry only bounded, non-identifying values: results, stages,
operation kinds, HTTP methods and status codes, never user ids, emails or keys.

``push_metrics`` is the ``--once --push-metrics`` side: it pushes one run's
registry to a Prometheus Pushgateway and never fails the run. It lives here, not
with the daemon, so that ``--once`` does not import the daemon's machinery.
"""

from __future__ import annotations

import platform

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import push_to_gateway

from syncd import __version__
from syncd.config import Settings
from syncd.errors import RunResult
from syncd.events import GAP_REASONS
from syncd.operations import ALL_KINDS

log = structlog.get_logger("syncd.metrics")

ERROR_STAGES = ("config", "keycloak", "litellm", "apply", "internal")

# The *_created series double the series count and no alert or dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """All metric objects, bound to one registry (a fresh one per test or run)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "syncd_runs", "Sync runs by result.", ["result"], registry=r
        )
        self.run_duration = Histogram(
            "syncd_run_duration_seconds",
            "Wall time of a sync run.",
            buckets=(0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.last_run = Gauge(
            "syncd_last_run_timestamp_seconds", "When the last run ended (Unix time).", registry=r
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When the last fully successful run ended (Unix time).",
            registry=r,
        )
        self.changes = Counter(
            "syncd_changes", "Operations applied successfully, by kind.", ["operation"], registry=r
        )
        self.operation_failures = Counter(
            "syncd_operation_failures", "Operations that failed, by kind.", ["operation"],
            registry=r,
        )
        self.errors = Counter(
            "syncd_errors", "Errors by stage (keycloak, litellm, apply, config, internal).",
            ["stage"], registry=r,
        )
        self.brake_engaged = Gauge(
            "syncd_brake_engaged",
            "1 when the last plan held destructive operations back, else 0.",
            registry=r,
        )
        self.held_back = Gauge(
            "syncd_held_back_operations",
            "Destructive operations the safety brake held back in the last run.",
            registry=r,
        )
        self.unconfirmed = Counter(
            "syncd_unconfirmed_operations",
            "Destructive operations skipped because a fresh read did not confirm them.",
            ["operation"],
            registry=r,
        )
        self.managed_teams = Gauge(
            "syncd_managed_teams", "Teams syncd manages after the last run.", registry=r
        )
        self.managed_members = Gauge(
            "syncd_managed_members", "Memberships in managed teams after the last run.",
            registry=r,
        )
        self.pending_changes = Gauge(
            "syncd_pending_changes", "Operations the last plan found to make.", registry=r
        )
        self.unresolved_identities = Gauge(
            "syncd_unresolved_identities",
            "Keycloak users the last plan left out, without a LiteLLM user, for an "
            "identity collision (a LiteLLM id taken or claimed twice); the run exits 9.",
            registry=r,
        )
        self.withheld_emails = Gauge(
            "syncd_withheld_emails",
            "Keycloak users the last plan synced with their teams but without their email "
            "(shared by two Keycloak users, or held by a LiteLLM user syncd may not take it "
            "from).",
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "syncd_consecutive_failures", "Failed runs since the last success.", registry=r
        )
        self.overruns = Counter(
            "syncd_run_overruns",
            "Scheduled runs skipped because the previous run was still going.",
            registry=r,
        )
        self.http_requests = Counter(
            "syncd_http_requests",
            "HTTP requests made, by target (keycloak, litellm), method and status.",
            ["target", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "syncd_http_request_duration_seconds",
            "HTTP request latency by target and method.",
            ["target", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.http_retries = Counter(
            "syncd_http_retries", "HTTP requests retried after a transient error.", ["target"],
            registry=r,
        )
        self.http_concurrency_limit = Gauge(
            "syncd_http_concurrency_limit",
            "Requests syncd lets itself have in flight to a target now: additive increase, "
            "multiplicative decrease on server errors and slow writes, between 1 and the "
            "configured concurrency.",
            ["target"],
            registry=r,
        )
        self.batches_split = Counter(
            "syncd_write_batches_split",
            "Batched LiteLLM writes answered 5xx or timing out whose missing part was sent "
            "again in halves, by operation (member_add, key_delete).",
            ["op"],
            registry=r,
        )
        self.batch_size = Gauge(
            "syncd_write_batch_size",
            "Members (or keys) per batched LiteLLM write now; halves when a batch fails.",
            registry=r,
        )
        # The admin-event fast path (daemon only; syncd.events).
        self.fast_path_active = Gauge(
            "syncd_event_fast_path_active",
            "1 while the admin-event fast path is in use, 0 for full reconciles only.",
            registry=r,
        )
        self.events_seen = Counter(
            "syncd_admin_events_seen", "Keycloak admin events read, each counted once.",
            registry=r,
        )
        self.events_applied = Counter(
            "syncd_admin_events_applied",
            "Admin events whose fast-path run succeeded.", registry=r,
        )
        self.fast_runs = Counter(
            "syncd_fast_path_runs", "Fast-path runs by result.", ["result"], registry=r,
        )
        self.event_lag = Gauge(
            "syncd_event_lag_seconds",
            "Age of the newest admin event processed, when its fast-path run ended.",
            registry=r,
        )
        self.event_propagation = Histogram(
            "syncd_event_propagation_seconds",
            "From an admin event's time to the end of the fast-path run that applied it.",
            buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300),
            registry=r,
        )
        self.event_gaps = Counter(
            "syncd_event_gaps",
            "Gaps in the admin-event tail that forced a full reconcile, by reason.",
            ["reason"], registry=r,
        )
        self.event_last_poll = Gauge(
            "syncd_event_last_poll_timestamp_seconds",
            "When admin events were last read successfully (Unix time).", registry=r,
        )
        self.build = Info("syncd_build", "Version of syncd and Python.", registry=r)
        self.build.info({"version": __version__, "python": platform.python_version()})
        for result in RunResult:
            self.runs.labels(result=result.value)
        for stage in ERROR_STAGES:
            self.errors.labels(stage=stage)
        for result in RunResult:
            self.fast_runs.labels(result=result.value)
        for reason in GAP_REASONS:
            self.event_gaps.labels(reason=reason)
        # Every operation kind from 0: a series that first appears at 1 is lost to
        # increase()/rate(), so the first failure (or change) of a kind after a
        # restart would never show on the dashboard.
        for kind in ALL_KINDS:
            self.changes.labels(operation=kind.KIND)
            self.operation_failures.labels(operation=kind.KIND)


def push_metrics(settings: Settings, metrics: Metrics) -> None:
    """Push one run's metrics to the Pushgateway (grouping key: job); never raises."""
    gateway = settings.pushgateway
    if not gateway.url:
        log.warning(
            "metrics_push_skipped", reason="--push-metrics given but pushgateway.url is not set"
        )
        return
    try:
        push_to_gateway(
            gateway.url, job=gateway.job, registry=metrics.registry,
            timeout=gateway.timeout_seconds,
        )
    except Exception as exc:  # a monitoring hiccup must not fail the sync
        log.error("metrics_push_failed", url=gateway.url, job=gateway.job,
                  error=f"{type(exc).__name__}: {exc}")
        return
    log.info("metrics_pushed", url=gateway.url, job=gateway.job)
