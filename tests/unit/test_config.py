"""Configuration errors: the right exit code, the key named, and no network call."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.config import load_settings
from syncd.errors import ConfigError, ExitCode


@pytest.fixture
def listener() -> Iterator[tuple[str, list[int]]]:
    """A loopback TCP port that records every connection made to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    sock.close()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.yaml"
    path.write_text(text)
    return path


def base(url: str, extra: str = "", kc_secret: str = "client_secret: s3cret") -> str:
    return f"""
keycloak:
  url: {url}
  realm: acme
  client_id: syncd
  {kc_secret}
litellm:
  url: {url}
  api_key: sk-test-key
selection:
  path_prefixes: ["/llm"]
{extra}
"""


def run_cli(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "syncd.cli", "--config", str(config), *args],
        capture_output=True, text=True, env=full_env, timeout=60,
    )


CASES = {
    "unknown key": ("teams:\n  alias_form: name\n", "teams.alias_form", "Extra inputs"),
    "wrong type": ("safety:\n  max_blocked: lots\n", "safety.max_blocked",
                   "valid integer"),
    "bad enum": ("departures:\n  policy: purge\n", "departures.policy", "'block' or 'delete'"),
    "bad duration": ("teams:\n  defaults:\n    budget_duration: monthly\n",
                     "teams.defaults.budget_duration", "30d"),
    "bad cron": ("schedule:\n  cron: '61 * * * *'\n", "schedule.cron", "crontab"),
    "bad path": ("selection:\n  exclude_paths: [llm]\n", "selection.exclude_paths.0",
                 "must start with '/'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_exits_3_names_key_and_calls_nothing(
    case: str, tmp_path: Path, listener: tuple[str, list[int]]
) -> None:
    url, accepted = listener
    extra, key, reason = CASES[case]
    text = base(url)
    if extra.startswith("selection:"):
        text = text.replace('selection:\n  path_prefixes: ["/llm"]\n', "")
    result = run_cli(write(tmp_path, text + extra), "--once")
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert key in result.stderr and reason in result.stderr
    assert accepted == []


def test_missing_secret(tmp_path: Path, listener: tuple[str, list[int]]) -> None:
    url, accepted = listener
    result = run_cli(write(tmp_path, base(url, kc_secret="")), "--once")
    assert result.returncode == ExitCode.CONFIG
    assert "keycloak: Value error" not in result.stderr
    assert "keycloak" in result.stderr and "client_secret is required" in result.stderr
    assert accepted == []


def test_unreadable_secret_file(tmp_path: Path, listener: tuple[str, list[int]]) -> None:
    url, accepted = listener
    missing = tmp_path / "nope"
    result = run_cli(write(tmp_path, base(url, kc_secret=f"client_secret_file: {missing}")),
                     "--once")
    assert result.returncode == ExitCode.CONFIG
    assert f"client_secret_file: cannot read {missing}" in result.stderr
    assert accepted == []


def test_malformed_url(tmp_path: Path) -> None:
    result = run_cli(write(tmp_path, base("htp//nowhere")), "validate")
    assert result.returncode == ExitCode.CONFIG
    assert "keycloak.url" in result.stderr and "litellm.url" in result.stderr


def test_secret_never_printed(tmp_path: Path) -> None:
    result = run_cli(write(tmp_path, base("http://x", extra="safety:\n  bogus: 1\n")), "--once")
    assert result.returncode == ExitCode.CONFIG
    assert "s3cret" not in result.stderr + result.stdout
    assert "sk-test-key" not in result.stderr + result.stdout


def test_validate_ok_and_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, base("http://kc.example:8080"))
    assert run_cli(path, "validate").returncode == 0
    settings = load_settings(path, {"SYNCD_KEYCLOAK__REALM": "other",
                                    "SYNCD_SAFETY__MAX_BLOCKED": "3"})
    assert settings.keycloak.realm == "other"
    assert settings.safety.max_blocked == 3
    assert settings.keycloak.secret() == "s3cret"


def test_secret_from_file_and_both_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    path = write(tmp_path, base("http://k", kc_secret=f"client_secret_file: {secret}"))
    assert load_settings(path, {}).keycloak.secret() == "from-file"
    with pytest.raises(ConfigError, match="either client_secret or client_secret_file"):
        load_settings(path, {"SYNCD_KEYCLOAK__CLIENT_SECRET": "x"})


def test_example_config_is_valid(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x")
    example = Path(__file__).parents[2] / "config" / "syncd.example.yaml"
    settings = load_settings(example, {"SYNCD_KEYCLOAK__CLIENT_SECRET_FILE": str(secret),
                                       "SYNCD_LITELLM__API_KEY_FILE": str(secret)})
    assert settings.safety.max_blocked == 25


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "absent.yaml", "validate")
    assert result.returncode == ExitCode.CONFIG
    assert "cannot read configuration file" in result.stderr
