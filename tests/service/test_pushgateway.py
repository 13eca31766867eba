"""`syncd --once --push-metrics` against a real Prometheus Pushgateway process.

The Pushgateway is Debian's ``prometheus-pushgateway`` package; without its
binary on PATH these tests are skipped (the failure-path test needs none).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.litellm_emulator.admin import EmulatorAdmin
from tests.fixtures.keycloak import RealmFactory
from tests.service.conftest import free_port, run_once
from tests.service.test_daemon import memberships

pytestmark = pytest.mark.integration

GROUPS: dict[str, dict[str, str]] = {"/llm/research": {}}
USERS = [{"username": "alice", "email": "alice@example.com", "groups": ["/llm/research"]}]
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    if PUSHGATEWAY is None:
        pytest.skip(
            "no Pushgateway binary on PATH (apt-get install -y prometheus-pushgateway)"
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "pushgateway.log").open("wb")
    proc = subprocess.Popen(
        # Debian's build persists to /var/lib/prometheus by default: keep it in memory.
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"pushgateway exited: {(tmp_path / 'pushgateway.log').read_text()}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("pushgateway did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def pushed(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_once_pushes_the_run_metrics(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, pushgateway: str, tmp_path: Path
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    result = run_once(
        realm, emulator, tmp_path, "--push-metrics",
        pushgateway={"url": pushgateway, "job": "syncd-cron"},
    )
    assert result.returncode == 0, result.stderr
    assert '"event": "metrics_pushed"' in result.stderr
    m = pushed(pushgateway)
    job = ("job", "syncd-cron")

    def value(name: str, **labels: str) -> float | None:
        return m.get((name, frozenset({job, ("instance", ""), *labels.items()})))

    assert value("syncd_runs_total", result="success") == 1
    assert value("syncd_runs_total", result="failure") == 0
    assert value("syncd_changes_total", operation="add_member") == 1
    assert value("syncd_managed_members") == 1
    assert (value("syncd_last_success_timestamp_seconds") or 0) > 0
    assert (value("push_time_seconds") or 0) > 0
    assert value("push_failure_time_seconds") == 0

    # A second run replaces the group's metrics (PUT): counters hold one run.
    result = run_once(
        realm, emulator, tmp_path, "--push-metrics",
        pushgateway={"url": pushgateway, "job": "syncd-cron"},
    )
    assert result.returncode == 0, result.stderr
    m = pushed(pushgateway)
    assert value("syncd_runs_total", result="success") == 1
    assert value("syncd_changes_total", operation="add_member") == 0  # nothing to do
    assert value("syncd_pending_changes") == 0


def test_dry_run_pushes_nothing(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, pushgateway: str, tmp_path: Path
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    result = run_once(
        realm, emulator, tmp_path, "--dry-run", "--push-metrics",
        pushgateway={"url": pushgateway},
    )
    assert result.returncode == 0, result.stderr
    assert not any(name.startswith("syncd_") for name, _ in pushed(pushgateway))


def test_a_failed_push_is_logged_and_does_not_fail_the_run(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups=GROUPS, users=USERS)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_once(
        realm, emulator, tmp_path, "--push-metrics",
        pushgateway={"url": closed, "timeout_seconds": 2},
    )
    assert result.returncode == 0, result.stderr
    assert '"event": "metrics_push_failed"' in result.stderr
    assert memberships(emulator) == {("research", "alice@example.com")}
