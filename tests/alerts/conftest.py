"""A real Prometheus server for the end-to-end alert tests, and what it scrapes.

Why a real server and not only ``promtool test rules``: promtool proves the
expressions on synthetic series. These fixtures prove the chain an on-call
engineer depends on: the daemon's real metric names and labels, a real scrape,
``for:`` durations on real samples, the Pushgateway path of the CronJob mode,
and the runbook links, all with the rules exactly as ``helm template`` renders
them (durations and thresholds shortened through chart values only).

Pieces:
  * `render_rules` — the PrometheusRule's groups from ``helm template``.
  * `PrometheusServer` — Debian's ``/usr/bin/prometheus`` on a free loopback
    port, 1 s scrape and evaluation interval, TSDB in the test's tmp dir, with
    a small client for ``/api/v1/{alerts,query,query_range,rules}``.
  * `AlertRecorder` — polls ``/api/v1/alerts`` in a thread and records every
    state change (pending, firing, resolved) with timestamps; printed (``-s``)
    and written to ``alert-sequence.txt`` in the test's tmp dir.
  * ``keycloak_proxy`` — the session's Keycloak behind the loopback proxy of
    tests/fixtures/latency_proxy.py, shut (connection refused, open connections
    cut) and reopened on the same port: "Keycloak stopped" without restarting
    the session's Keycloak for every other test.
  * `JobStatusExporter` — serves the four ``kube_job_status_*`` series
    kube-state-metrics would publish for the CronJob's Jobs, built from the
    real exit codes of the real ``syncd --once`` runs (there is no Kubernetes
    here: this stands in for the Job controller and kube-state-metrics only).

A missing ``prometheus``/``prometheus-pushgateway``/``helm`` fails under CI and
skips elsewhere (tests/deploy/conftest.py's convention).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.conftest import find_tool, one, render
from tests.fixtures.latency_proxy import LatencyProxy
from tests.service.conftest import free_port

__all__ = [
    "AlertRecorder",
    "JobStatusExporter",
    "PrometheusServer",
    "render_rules",
]


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return find_tool("prometheus")


@pytest.fixture(scope="session")
def pushgateway_bin() -> str:
    return find_tool("prometheus-pushgateway")


def render_rules(
    helm: str, values: Path, sets: Mapping[str, str], *, release: str = "syncd",
    namespace: str = "syncd",
) -> list[dict[str, Any]]:
    """The rule groups of the chart's PrometheusRule for these values."""
    objects = render(
        helm, values, sets=tuple(f"{k}={v}" for k, v in sorted(sets.items())),
        release=release, namespace=namespace,
    )
    groups: list[dict[str, Any]] = one(objects, "PrometheusRule")["spec"]["groups"]
    return groups


def wait_http(url: str, what: str, proc: subprocess.Popen[bytes], log: Path,
              timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready after {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class PrometheusServer:
    """One Prometheus process with a fixed set of scrape jobs and rule groups."""

    def __init__(self, binary: str, workdir: Path, scrape_configs: list[dict[str, Any]]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.rules_path = workdir / "rules.yaml"
        self.rules_path.write_text(yaml.safe_dump({"groups": []}), encoding="utf-8")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(self.rules_path)],
            "scrape_configs": scrape_configs,
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config_path}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir,
        )
        self.http = httpx.Client(base_url=self.url, timeout=5)
        wait_http(f"{self.url}/-/ready", "prometheus", self.proc, self.log_path)

    def load_rules(self, groups: list[dict[str, Any]], expect: set[str]) -> None:
        """Write the rules file and reload (SIGHUP) once every scrape job has data.

        Prometheus applies its first target set about 5 s after start, while rules
        are evaluated at once: `absent(up)` would fire SyncdDown for a Prometheus
        that merely has not scraped yet. Loading the rules after the first scrapes
        is the steady state of a long-running Prometheus, which is what is tested.
        """
        self.wait("a first scrape of every target", lambda: self.query("up")
                  and all(s["value"][1] == "1" for s in self.query("up")))
        self.rules_path.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
        self.proc.send_signal(signal.SIGHUP)
        self.wait("the rules loaded", lambda: {
            r["name"] for g in self.rules() for r in g["rules"]} == expect)

    def api(self, path: str, **params: Any) -> Any:
        response = self.http.get(f"/api/v1/{path}", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api(
            "query_range", query=expr, start=start, end=end, step="1s"
        )["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules", type="alert")["groups"]
        return groups

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out ({timeout}s) waiting for {what}; alerts: {self.alerts()}")
            time.sleep(0.2)

    def close(self) -> None:
        stop_process(self.proc, grace=2)  # the TSDB is thrown away: no need to wait for it
        self.http.close()
        self._log.close()


AlertKey = tuple[str, frozenset[tuple[str, str]]]


class AlertRecorder:
    """Every alert state change seen through ``/api/v1/alerts``, polled every 0.2 s.

    An alert that disappears from the API after having been pending or firing is
    recorded as ``resolved`` (Prometheus lists only pending and firing alerts).
    """

    def __init__(self, prometheus: PrometheusServer) -> None:
        self.prometheus = prometheus
        self.t0 = time.time()
        self.events: list[tuple[float, str, str, dict[str, str]]] = []  # (t, name, state, labels)
        self.fired: dict[AlertKey, dict[str, Any]] = {}  # every alert seen firing, last seen
        self._state: dict[AlertKey, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=prometheus.url, timeout=5)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                self.poll()
            self._stop.wait(0.2)

    def poll(self) -> None:
        alerts = self._client.get("/api/v1/alerts").json()["data"]["alerts"]
        now = time.time()
        seen: dict[AlertKey, tuple[str, dict[str, Any]]] = {}
        for alert in alerts:
            labels = dict(alert["labels"])
            key = (labels["alertname"], frozenset(labels.items()))
            seen[key] = (alert["state"], alert)
        with self._lock:
            for key, (state, alert) in seen.items():
                if self._state.get(key) != state:
                    self.events.append((now, key[0], state, dict(alert["labels"])))
                    self._state[key] = state
                if state == "firing":
                    self.fired[key] = alert
            for key in [k for k in self._state if k not in seen]:
                if self._state[key] != "resolved":
                    self.events.append((now, key[0], "resolved", dict(key[1])))
                    self._state[key] = "resolved"

    def mark(self, phase: str) -> None:
        """A phase marker in the sequence (what the test just did)."""
        with self._lock:
            self.events.append((time.time(), f"-- {phase}", "", {}))

    def state(self, alertname: str) -> set[str]:
        """Current states of the alerts of that name (empty when none is active)."""
        with self._lock:
            return {s for (name, _), s in self._state.items() if name == alertname
                    and s != "resolved"}

    def states_seen(self, alertname: str) -> list[str]:
        with self._lock:
            return [state for _, name, state, _ in self.events if name == alertname]

    def active(self) -> dict[str, set[str]]:
        with self._lock:
            out: dict[str, set[str]] = {}
            for (name, _), s in self._state.items():
                if s != "resolved":
                    out.setdefault(name, set()).add(s)
            return out

    def render(self) -> str:
        lines = []
        with self._lock:
            for t, name, state, labels in self.events:
                stamp = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
                rel = f"+{t - self.t0:6.1f}s"
                if not state:
                    lines.append(f"{stamp}Z {rel}  {name}")
                    continue
                extra = {k: v for k, v in labels.items()
                         if k in ("target", "job_name", "severity")}
                lines.append(f"{stamp}Z {rel}  {name:<26} {state:<9} {extra or ''}")
        return "\n".join(lines)

    def close(self, path: Path, title: str) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()
        text = f"# {title}\n{self.render()}\n"
        path.write_text(text, encoding="utf-8")
        print(f"\n{text}(written to {path})")


class JobStatusExporter:
    """The ``kube_job_status_*`` series kube-state-metrics publishes for Jobs.

    `record(exit_code)` is one Job of the CronJob, named ``<cronjob>-<n>`` as
    the CronJob controller names them, whose only pod exited with that code.
    """

    def __init__(self, namespace: str, cronjob: str) -> None:
        self.namespace = namespace
        self.cronjob = cronjob
        self.jobs: list[tuple[str, float, int]] = []  # (job_name, start time, exit code)
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def record(self, started: float, exit_code: int) -> str:
        name = f"{self.cronjob}-{29000000 + len(self.jobs)}"
        self.jobs.append((name, started, exit_code))
        return name

    def exposition(self) -> str:
        lines = []
        for name, started, code in list(self.jobs):
            labels = f'namespace="{self.namespace}",job_name="{name}"'
            lines += [
                f"kube_job_status_start_time{{{labels}}} {started:.3f}",
                f"kube_job_status_active{{{labels}}} 0",
                f"kube_job_status_succeeded{{{labels}}} {1 if code == 0 else 0}",
                f"kube_job_status_failed{{{labels}}} {0 if code == 0 else 1}",
            ]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def keycloak_proxy(keycloak_server: Any) -> Iterator[LatencyProxy]:
    """The session's Keycloak behind a proxy the test can shut."""
    url = httpx.URL(keycloak_server.url)
    proxy = LatencyProxy(url.host, url.port or 80)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def pushgateway(pushgateway_bin: str, tmp_path: Path) -> Iterator[str]:
    """A real Pushgateway on loopback, in memory."""
    port = free_port()
    log_path = tmp_path / "pushgateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            # Debian's build persists to /var/lib/prometheus by default: keep it in memory.
            [pushgateway_bin, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/-/ready", "pushgateway", proc, log_path)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc)
