"""The daemon's parts that need no Keycloak: schedule, readiness rules, start-up errors,
and pushes that cannot fail the run. The endpoints themselves: test_endpoints.py."""

from __future__ import annotations

import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from structlog.testing import capture_logs

from syncd.config import (
    PushgatewaySettings,
    ReadinessSettings,
    ScheduleSettings,
    Settings,
    load_settings,
)
from syncd.errors import ConfigError, RunResult
from syncd.metrics import Metrics, push_metrics
from syncd.service import Health, build_trigger, describe_schedule
from tests.service.conftest import SYNCD_BIN, free_port

# -- schedule -----------------------------------------------------------------------


def test_interval_trigger_with_jitter() -> None:
    trigger = build_trigger(ScheduleSettings(interval_seconds=300, jitter_seconds=30))
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval == timedelta(seconds=300)
    now = datetime.now(UTC)
    fire = trigger.get_next_fire_time(now, now)
    assert now + timedelta(seconds=300) <= fire <= now + timedelta(seconds=330)


def test_cron_trigger_in_utc_with_jitter() -> None:
    schedule = ScheduleSettings(cron="*/15 * * * *", jitter_seconds=10)
    trigger = build_trigger(schedule)
    assert isinstance(trigger, CronTrigger)
    assert trigger.jitter == 10
    now = datetime(2025, 1, 1, 12, 1, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, now)
    assert datetime(2025, 1, 1, 12, 15, tzinfo=UTC) <= fire <= datetime(
        2025, 1, 1, 12, 15, 10, tzinfo=UTC
    )
    assert describe_schedule(schedule) == "cron '*/15 * * * *' (UTC), jitter up to 10s"


def test_no_jitter() -> None:
    trigger = build_trigger(ScheduleSettings(interval_seconds=2, jitter_seconds=0))
    now = datetime.now(UTC)
    assert trigger.get_next_fire_time(now, now) == now + timedelta(seconds=2)


@pytest.mark.parametrize("cron", ["every day", "61 * * * *", "* * *"])
def test_a_bad_cron_expression_is_a_config_error(cron: str) -> None:
    """Caught when the configuration is loaded (so `syncd validate` sees it too)."""
    env = {
        "SYNCD_KEYCLOAK__URL": "http://kc", "SYNCD_KEYCLOAK__REALM": "r",
        "SYNCD_KEYCLOAK__CLIENT_ID": "c", "SYNCD_KEYCLOAK__CLIENT_SECRET": "s",
        "SYNCD_LITELLM__URL": "http://ll", "SYNCD_LITELLM__API_KEY": "k",
        "SYNCD_SCHEDULE__CRON": cron,
    }
    with pytest.raises(ConfigError, match=r"schedule\.cron: not a valid crontab expression"):
        load_settings(None, env)


# -- readiness ----------------------------------------------------------------------


def health(max_failures: int = 2, max_age: float = 600) -> Health:
    return Health(
        ReadinessSettings(max_consecutive_failures=max_failures, max_success_age_seconds=max_age)
    )


def test_not_ready_before_the_first_success() -> None:
    h = health()
    assert not h.ready()[0]
    assert h.ready()[1]["status"] == "not ready: no successful sync yet"
    for result in (RunResult.FAILURE, RunResult.PARTIAL, RunResult.BRAKED):
        h.run_ended(result)
        assert not h.ready()[0]
    h.run_ended(RunResult.SUCCESS)
    assert h.ready()[0]


def test_failures_in_a_row_make_it_unready_and_a_success_resets() -> None:
    h = health(max_failures=2)
    h.run_ended(RunResult.SUCCESS)
    h.run_ended(RunResult.FAILURE)
    assert h.ready()[0]
    h.run_ended(RunResult.BRAKED)  # neither failure nor success
    assert h.ready()[0]
    h.run_ended(RunResult.PARTIAL)  # counts as failed, as in syncd_consecutive_failures
    ok, body = h.ready()
    assert not ok
    assert body["status"] == "not ready: 2 consecutive failed runs"
    assert body["last_result"] == "partial"
    h.run_ended(RunResult.SUCCESS)
    assert h.ready()[0]
    assert h.ready()[1]["consecutive_failures"] == 0


def test_an_old_success_makes_it_unready() -> None:
    h = health(max_age=60)
    h.run_ended(RunResult.SUCCESS)
    assert h.ready()[0]
    assert h.last_success_mono is not None
    h.last_success_mono -= 61
    ok, body = h.ready()
    assert not ok and body["status"].startswith("not ready: last success 61s ago")


def test_shutting_down_is_unready_but_alive() -> None:
    h = health()
    h.scheduler_seen(running=True, next_run=None)
    h.run_ended(RunResult.SUCCESS)
    h.stopping = True
    assert h.ready()[1]["status"] == "not ready: shutting down"
    assert h.liveness()[0]
    assert h.liveness()[1]["status"] == "stopping"


def test_liveness_needs_the_scheduler() -> None:
    """A stalled event loop is not judged here: it does not answer at all
    (test_endpoints.py)."""
    h = health()
    ok, body = h.liveness()
    assert not ok and body["status"] == "scheduler not running"
    h.scheduler_seen(running=True, next_run=datetime(2025, 1, 1, 3, tzinfo=UTC))
    ok, body = h.liveness()
    assert ok and body == {
        "status": "ok", "scheduler": "running", "next_run": "2025-01-01T03:00:00+00:00",
        "run_in_progress": False,
    }


def test_result_values_are_the_metric_labels() -> None:
    """Alerts and dashboards select on these strings."""
    assert [r.value for r in RunResult] == ["success", "failure", "partial", "braked"]
    assert [r for r in RunResult if r.failed] == [RunResult.FAILURE, RunResult.PARTIAL]


# -- pushes -------------------------------------------------------------------------


def settings_with(pushgateway: PushgatewaySettings) -> Settings:
    return Settings(
        keycloak={"url": "http://kc.invalid", "realm": "r", "client_id": "c",
                  "client_secret": "s"},
        litellm={"url": "http://ll.invalid", "api_key": "k"},
        pushgateway=pushgateway,
    )


def test_push_without_a_url_is_skipped() -> None:
    with capture_logs() as logs:
        push_metrics(settings_with(PushgatewaySettings()), Metrics())
    assert [e["event"] for e in logs] == ["metrics_push_skipped"]


def test_a_failing_push_does_not_raise() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with capture_logs() as logs:
        push_metrics(settings_with(PushgatewaySettings(url=url, timeout_seconds=1)), Metrics())
    assert [e["event"] for e in logs] == ["metrics_push_failed"]
    assert logs[0]["log_level"] == "error"


# -- start-up errors of the real process ---------------------------------------------


def start_daemon(tmp_path: Path, **overrides: object) -> subprocess.CompletedProcess[str]:
    config = {
        "keycloak": {"url": "http://127.0.0.1:9", "realm": "r", "client_id": "c",
                     "client_secret": "s"},
        "litellm": {"url": "http://127.0.0.1:9", "api_key": "k"},
        "selection": {"path_prefixes": ["/llm"]},
        "logging": {"format": "json"},
        **overrides,
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return subprocess.run(
        [str(SYNCD_BIN), "--config", str(path)], capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_a_bad_cron_expression_exits_3(tmp_path: Path) -> None:
    result = start_daemon(tmp_path, schedule={"cron": "not a cron"})
    assert result.returncode == 3
    assert "schedule.cron" in result.stderr
    assert "sync_started" not in result.stderr


def test_a_port_in_use_exits_3(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = start_daemon(tmp_path, server={"host": "127.0.0.1", "port": port})
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "sync_started" not in result.stderr
