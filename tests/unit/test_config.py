"""Configuration errors: the right exit code, the key named, and no network call."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("", {}, "verified"),  # the default (issue 24)
    ("users:\n  link_by_email: true\n", {}, "true"),  # the old boolean keeps its meaning
    ("users:\n  link_by_email: false\n", {}, "false"),
    ("users:\n  link_by_email: verified\n", {}, "verified"),
    ("", {"SYNCD_USERS__LINK_BY_EMAIL": "True"}, "true"),
    ("", {"SYNCD_USERS__LINK_BY_EMAIL": "false"}, "false"),
])
def test_link_by_email_words_and_old_booleans(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    settings = load_settings(write(tmp_path, base("http://kc.example:8080", text)), env)
    assert settings.users.link_by_email == expected


def test_link_by_email_other_words_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, base("http://kc.example:8080", "users:\n  link_by_email: maybe\n"))
    with pytest.raises(ConfigError, match=r"users.link_by_email.*'verified', 'true' or 'false'"):
        load_settings(path, {})


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


# -- every bad input: one line, exit 3, nothing contacted (issue 12, part 4) -----------

BIG = 2 * 1024 * 1024  # over the 1 MiB cap


def _bad_bytes(url: str) -> bytes:
    return base(url).encode() + b"# caf\xe9 in Latin-1\n"


def _dup_nested(url: str) -> str:
    return base(url, "departures:\n  grace_days: 30\n  grace_days: 1\n")


def _dup_section(url: str) -> str:
    return base(url, "safety:\n  max_blocked: 5\nsafety:\n  max_deleted: 1\n")


# name: (config text or bytes from the listener URL, environment, substrings the one line
# must contain)
BAD_INPUTS: dict[str, tuple[Any, dict[str, str], tuple[str, ...]]] = {
    "file not UTF-8": (_bad_bytes, {}, ("not UTF-8", "line 13")),
    "section env not JSON": (base, {"SYNCD_SAFETY": "not json"}, ("SYNCD_SAFETY", "JSON")),
    "list env bad JSON": (base, {"SYNCD_SELECTION__PATH_PREFIXES": "[/llm"},
                          ("SYNCD_SELECTION__PATH_PREFIXES", "JSON")),
    "list env bad item": (base, {"SYNCD_SELECTION__PATH_PREFIXES": "/llm,ai"},
                          ("SYNCD_SELECTION__PATH_PREFIXES", "selection.path_prefixes.1",
                           "must start with '/'")),
    "section env not an object": (base, {"SYNCD_SAFETY": "[1, 2]"},
                                  ("SYNCD_SAFETY", "valid dictionary")),
    "misspelt section env": (base, {"SYNCD_SAFTEY__MAX_BLOCKED": "50"},
                             ("SYNCD_SAFTEY__MAX_BLOCKED",
                              "did you mean SYNCD_SAFETY__MAX_BLOCKED?")),
    "misspelt key env": (base, {"SYNCD_KEYCLOAK__TIMEOUT": "5"},
                         ("SYNCD_KEYCLOAK__TIMEOUT", "SYNCD_KEYCLOAK__TIMEOUT_SECONDS")),
    "renamed key env": (base, {"SYNCD_SAFETY__MAX_DESTRUCTIVE_OPS": "50"},
                        ("safety", "max_destructive_ops", "max_blocked")),
    "unknown env": (base, {"SYNCD_BOGUS": "1"}, ("SYNCD_BOGUS", "unknown")),
    "env below a leaf": (base, {"SYNCD_KEYCLOAK__URL__HOST": "x"},
                         ("SYNCD_KEYCLOAK__URL__HOST",)),
    "env below a mapping": (base, {"SYNCD_TEAMS__OVERRIDES__X": "{}"},
                            ("SYNCD_TEAMS__OVERRIDES__X", "SYNCD_TEAMS__OVERRIDES", "JSON")),
    "env number not finite": (base, {"SYNCD_LITELLM__TIMEOUT_SECONDS": "inf"},
                              ("litellm.timeout_seconds", "SYNCD_LITELLM__TIMEOUT_SECONDS",
                               "finite")),
    "env int is a list": (base, {"SYNCD_SAFETY__MAX_BLOCKED": "[1]"},
                          ("safety.max_blocked", "SYNCD_SAFETY__MAX_BLOCKED")),
    "grace days absurd": (lambda u: base(u, "departures:\n  grace_days: 1e10\n"), {},
                          ("departures.grace_days", "less than or equal")),
    "removed grace infinite": (lambda u: base(u, "teams:\n  removed_grace_days: .inf\n"), {},
                               ("teams.removed_grace_days", "finite")),
    "timeout infinite": (lambda u: base(u).replace("realm: acme", "realm: acme\n  "
                                                   "timeout_seconds: .inf"), {},
                         ("keycloak.timeout_seconds", "finite")),
    "fraction NaN": (lambda u: base(u, "safety:\n  max_blocked_fraction: .nan\n"), {},
                     ("safety.max_blocked_fraction", "finite")),
    "interval absurd": (lambda u: base(u, "schedule:\n  interval_seconds: 1e9\n"), {},
                        ("schedule.interval_seconds",)),
    "backoff infinite": (lambda u: base(u, "retries:\n  max_backoff_seconds: .inf\n"), {},
                         ("retries.max_backoff_seconds",)),
    "retries per run absurd": (lambda u: base(u, "retries:\n  max_retries_per_run: 10000000000\n"),
                               {}, ("retries.max_retries_per_run",)),
    "failures absurd": (lambda u: base(u, "readiness:\n  max_consecutive_failures: 10000000\n"),
                        {}, ("readiness.max_consecutive_failures",)),
    "tpm absurd": (lambda u: base(u, "teams:\n  defaults:\n    tpm_limit: 100000000000000000000\n"),
                   {}, ("teams.defaults.tpm_limit",)),
    "budget infinite": (lambda u: base(u, "teams:\n  defaults:\n    max_budget: .inf\n"), {},
                        ("teams.defaults.max_budget", "finite")),
    "duplicate key": (_dup_nested, {}, ("duplicate key 'grace_days'", "line 14",
                                         "first at line 13")),
    "duplicate section": (_dup_section, {}, ("duplicate key 'safety'",)),
    "file too large": (lambda u: base(u) + "#" + "x" * BIG + "\n", {}, ("1 MiB",)),
    "nested too deeply": (lambda u: base(u) + "x: " + "[" * 100_000 + "\n", {},
                          ("nested too deeply",)),
    "YAML syntax": (lambda u: base(u, "safety: [unclosed\n"), {}, ("not valid YAML", "line")),
    "NUL character": (lambda u: base(u) + "# \x00\n", {}, ("not valid YAML",)),
    "two errors": (lambda u: base("htp//nowhere"), {}, ("keycloak.url", "litellm.url")),
    "secret file not UTF-8": ("secret-bytes", {}, ("client_secret_file", "not UTF-8")),
}


def _materialise(case: str, tmp_path: Path, url: str) -> Path:
    make, _, _ = BAD_INPUTS[case]
    path = tmp_path / "syncd.yaml"
    if make == "secret-bytes":
        secret = tmp_path / "secret"
        secret.write_bytes(b"s3cr\xffet\n")
        path.write_text(base(url, kc_secret=f"client_secret_file: {secret}"))
        return path
    content = make(url)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["validate", "--once"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_bad_input_is_one_line_and_exit_3(
    case: str, command: str, tmp_path: Path, listener: tuple[str, list[int]]
) -> None:
    """`syncd validate` and a real run give the same single line, exit 3, before any
    connection (the listener is both the Keycloak and the LiteLLM URL)."""
    url, accepted = listener
    path = _materialise(case, tmp_path, url)
    _, env, expected = BAD_INPUTS[case]
    result = run_cli(path, command, env=env)
    out = result.stdout + result.stderr
    lines = [line for line in out.splitlines() if line.strip()]
    assert result.returncode == ExitCode.CONFIG, out[:2000]
    assert "Traceback" not in out
    assert len(lines) == 1, out[:2000]
    assert len(lines[0]) < 2000, lines[0][:300]
    for text in expected:
        assert text in lines[0], lines[0]
    assert "s3cr" not in out and "sk-test-key" not in out
    assert accepted == []


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """50 MB used to take a minute and a gigabyte; the size is checked first."""
    path = tmp_path / "syncd.yaml"
    path.write_text(base("http://kc") + ("# padding\n" * 5_000_000))
    with pytest.raises(ConfigError, match="1 MiB"):
        load_settings(path, {})


GOOD = {"SYNCD_KEYCLOAK__CLIENT_SECRET": "s"}


def test_a_comma_separated_string_is_a_list(tmp_path: Path) -> None:
    """Chosen: list-of-strings fields accept `a,b` from the environment (and JSON)."""
    path = write(tmp_path, base("http://kc"))
    s = load_settings(path, {"SYNCD_SELECTION__PATH_PREFIXES": "/llm, /ai/",
                             "SYNCD_DEPARTURES__IGNORE_USERS": '["a,b", "c"]',
                             "SYNCD_TEAMS__DEFAULTS__MODELS": ""})
    assert s.selection.path_prefixes == ["/llm", "/ai"]
    assert s.departures.ignore_users == ["a,b", "c"]
    assert s.teams.defaults.models == []


def test_env_sections_as_json_merge_with_the_file_and_keys(tmp_path: Path) -> None:
    path = write(tmp_path, base("http://kc", "safety:\n  max_deleted: 3\n"))
    s = load_settings(path, {"SYNCD_SAFETY": '{"max_blocked": 7}',
                             "SYNCD_SAFETY__MAX_BLOCKED_FRACTION": "0.5",
                             "syncd_logging__level": "debug"})
    assert (s.safety.max_blocked, s.safety.max_deleted) == (7, 3)
    assert s.safety.max_blocked_fraction == 0.5
    assert s.logging.level == "debug"


@pytest.mark.parametrize("name", ["SYNCD_CONFIG", "SYNCD_CACHE_DIR", "SYNCD_JAVA_HOME",
                                  "SYNCD_NO_JDK_INSTALL", "SYNCD_PORT",
                                  "SYNCD_PORT_9108_TCP_ADDR", "SYNCD_SERVICE_HOST"])
def test_variables_that_are_not_settings_are_allowed(name: str, tmp_path: Path) -> None:
    """Dev tooling's variables and Kubernetes service links (a Service named `syncd`)
    must not stop the daemon from starting."""
    path = write(tmp_path, base("http://kc"))
    env = {name: str(path) if name == "SYNCD_CONFIG" else "tcp://10.0.0.1:9108"}
    assert load_settings(path, env).keycloak.realm == "acme"


def test_a_bom_merge_keys_and_values_at_the_bounds_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    text = base("http://kc", "departures:\n  grace_days: 3650\n"
                "teams:\n  defaults: &common {max_budget: 5, rpm_limit: 9}\n"
                "  overrides:\n    /llm/a:\n      <<: *common\n      max_budget: 6\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    s = load_settings(path, {})
    assert s.departures.grace_days == 3650
    assert s.teams.overrides["/llm/a"].max_budget == 6
    assert s.teams.overrides["/llm/a"].rpm_limit == 9
