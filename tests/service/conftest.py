"""The real ``syncd`` daemon as a child process, against real Keycloak and the emulator.

``syncd_daemon(realm, emulator, **overrides)`` writes a YAML configuration
(JSON logs, a 1 s interval, no jitter, fast retries), passes the secrets
through the environment as an operator would, starts ``.venv/bin/syncd`` with
``server.port: 0`` and learns the bound port from the ``service_started`` log
event, so no port is ever guessed. The returned `SyncdProcess` scrapes
``/metrics`` over HTTP, reads ``/healthz`` and ``/readyz``, parses the JSON
log lines, and stops the process (SIGTERM) at the end of the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devtools.litellm_emulator.admin import EmulatorAdmin

# keycloak_server, realm_factory, litellm_emulator and emulator come from the
# plugins tests/conftest.py registers: one server of each per session, shared
# with the other test folders (a star import here would start second ones).
from tests.fixtures.keycloak import KeycloakRealm

REPO = Path(__file__).resolve().parents[2]
SYNCD_BIN = REPO / ".venv" / "bin" / "syncd"
if not SYNCD_BIN.exists():  # an environment where the venv lives elsewhere
    SYNCD_BIN = Path(shutil.which("syncd") or Path(sys.executable).parent / "syncd")

Labels = frozenset[tuple[str, str]]


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def syncd_config(
    realm: KeycloakRealm, emulator: EmulatorAdmin, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A configuration for the test realm and emulator, without the secrets."""
    base: dict[str, Any] = {
        "keycloak": {"url": realm.url, "realm": realm.name, "client_id": realm.client_id},
        "litellm": {"url": emulator.url},
        "selection": {"path_prefixes": ["/llm"], "attribute": None},
        "schedule": {"interval_seconds": 1, "jitter_seconds": 0, "shutdown_timeout_seconds": 20},
        "server": {"host": "127.0.0.1", "port": 0},
        "readiness": {"max_consecutive_failures": 2, "max_success_age_seconds": 600},
        "retries": {
            "max_attempts": 3,
            "initial_backoff_seconds": 0.05,
            "max_backoff_seconds": 0.5,
        },
        "logging": {"level": "info", "format": "json"},
    }
    return deep_merge(base, overrides or {})


def syncd_env(realm: KeycloakRealm, api_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["SYNCD_KEYCLOAK__CLIENT_SECRET"] = realm.client_secret
    env["SYNCD_LITELLM__API_KEY"] = api_key
    return env


class SyncdProcess:
    """One ``syncd`` child process with its configuration file and log file."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        self.workdir = workdir
        self.config_path = workdir / "syncd.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "syncd.log"
        self._log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(SYNCD_BIN), "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
        self.port = 0
        self.http = httpx.Client(timeout=5)

    # -- logs ------------------------------------------------------------------

    def raw_log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """Every log line as a dict; a line that is not JSON fails the test."""
        out = []
        for line in self.raw_log().splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"syncd wrote a non-JSON log line: {line!r}")
        return out

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def finished_runs(self) -> list[dict[str, Any]]:
        return self.named("sync_finished")

    # -- waiting ---------------------------------------------------------------

    def wait_for(
        self, what: str, predicate: Callable[[], Any], timeout: float = 30.0,
        interval: float = 0.1,
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"syncd exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.raw_log()[-4000:]
                )
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; log tail:\n{self.raw_log()[-4000:]}")
            time.sleep(interval)

    def wait_started(self, timeout: float = 30.0) -> None:
        def started() -> int:
            for e in self.named("service_started"):
                return int(e["port"])
            return 0

        self.port = self.wait_for("service_started", started, timeout)

    def wait_runs(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` runs have finished; return their summaries."""
        runs: list[dict[str, Any]] = self.wait_for(
            f"{count} finished runs", lambda: (r := self.finished_runs()) and len(r) >= count
            and r, timeout,
        )
        return runs

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"syncd did not exit within {timeout}s:\n{self.raw_log()[-4000:]}")

    # -- HTTP ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port, "wait_started() first"
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return self.http.get(self.url + path)

    def metrics(self) -> dict[tuple[str, Labels], float]:
        """Scrape /metrics: {(sample name, labels): value}."""
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        out: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value; 0 when the series does not exist (yet)."""
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def ready(self) -> tuple[int, dict[str, Any]]:
        response = self.get("/readyz")
        return response.status_code, response.json()

    # -- stopping --------------------------------------------------------------

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.http.close()
        self._log_file.close()


DaemonFactory = Callable[..., SyncdProcess]


@pytest.fixture
def syncd_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start syncd daemons; ``api_key`` overrides the LiteLLM key, the rest is config."""
    started: list[SyncdProcess] = []

    def start(
        realm: KeycloakRealm,
        emulator: EmulatorAdmin,
        *,
        api_key: str | None = None,
        wait: bool = True,
        **overrides: Any,
    ) -> SyncdProcess:
        workdir = tmp_path / f"syncd-{len(started)}"
        workdir.mkdir()
        config = syncd_config(realm, emulator, overrides)
        env = syncd_env(realm, api_key if api_key is not None else emulator.master_key)
        proc = SyncdProcess(workdir, config, env)
        started.append(proc)
        if wait:
            proc.wait_started()
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.close()


def run_once(
    realm: KeycloakRealm,
    emulator: EmulatorAdmin,
    workdir: Path,
    *args: str,
    api_key: str | None = None,
    **overrides: Any,
) -> subprocess.CompletedProcess[str]:
    """``syncd --once <args>`` to completion (stdout and stderr captured)."""
    config_path = workdir / "syncd-once.yaml"
    config_path.write_text(
        yaml.safe_dump(syncd_config(realm, emulator, overrides)), encoding="utf-8"
    )
    env = syncd_env(realm, api_key if api_key is not None else emulator.master_key)
    return subprocess.run(
        [str(SYNCD_BIN), "--config", str(config_path), "--once", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120,
        cwd=workdir,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
