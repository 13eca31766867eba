"""The container image, built from the Dockerfile and run the way the Helm chart
runs it: podman's flags come from the chart's rendered pod (tests/deploy/pod.py),
the configuration from its ConfigMap, the secrets from its Secret as mounted
files; Keycloak is the session's real one, LiteLLM the emulator, both reached on
the host network.

The image is built once per session (``syncd_image``, tests/deploy/conftest.py)
on the stand-in base of devtools/container_image.py.
"""

from __future__ import annotations

import json
import re
import socket
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devtools import container_image
from devtools.container_image import BuildResult, podman
from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.deploy.conftest import DEPLOYMENT, REPO, config_map, render
from tests.deploy.pod import PodmanPod, podman_pod
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import SERVICE_USER, members, teams

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# What syncd may add to the base image (issue 22): 100 MB.
MAX_ADDED_BYTES = 100 * 1000 * 1000

GROUPS = ["/llm/research", "/llm/platform", "/other"]
PEOPLE = [
    User("alice", "alice@example.com", groups=["/llm/research", "/llm/platform"]),
    User("bob", "bob@example.com", groups=["/llm/research"]),
    User("carol", "carol@example.com", groups=["/other"]),
]

# Anything that looks like a credential in image metadata.
SECRET_PATTERNS = [
    re.compile(r"(?i)(secret|passw(or)?d|token|api[_-]?key|credential)\w*\s*[=:]\s*\S"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"),
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # user:password@ in a URL
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


# What the runtime stage may change in its base: the venv, the syncd user.
ALLOWED_CHANGES = {"/etc", "/opt", "/opt/syncd"} | {
    f"/etc/{name}{suffix}" for name in ("passwd", "group", "shadow", "gshadow")
    for suffix in ("", "-")
}


def _repo_tag(image: BuildResult) -> tuple[str, str]:
    repository, _, tag = image.tag.rpartition(":")
    return repository, tag


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def inspect(ref: str) -> dict[str, Any]:
    return dict(json.loads(podman("image", "inspect", ref).stdout)[0])


# --- the chart, rendered for the session's Keycloak realm and emulator -------------


def service_key(emulator: EmulatorAdmin) -> str:
    """A proxy_admin service user's key, as docs/deploy.md tells operators to make."""
    emulator.create_user(SERVICE_USER, user_role="proxy_admin")
    key = str(emulator.generate_key(user_id=SERVICE_USER, key_alias="syncd")["key"])
    emulator.clear_audit()
    return key


def chart_pod(
    helm: str, image: BuildResult, workdir: Path, *, mode: str, realm: KeycloakRealm,
    emulator: EmulatorAdmin, api_key: str, values: dict[str, Any] | None = None,
) -> PodmanPod:
    """``helm template`` with values for this realm and emulator, turned into podman."""
    repository, tag = _repo_tag(image)
    doc: dict[str, Any] = {
        "mode": mode,
        "image": {"repository": repository, "tag": tag},
        "config": {
            "keycloak": {"url": realm.url, "realm": realm.name, "client_id": realm.client_id},
            "litellm": {"url": emulator.url},
            "selection": {"path_prefixes": ["/llm"]},
        },
        "secrets": {"keycloakClientSecret": realm.client_secret, "litellmApiKey": api_key},
    }
    if mode == "cronjob":
        doc["cronjob"] = {"pushMetrics": False}
    for key, value in (values or {}).items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    values_file = workdir / "values.yaml"
    values_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    objects = render(helm, values_file)
    pod = podman_pod(objects, workdir)
    assert pod.image == image.tag  # the chart runs exactly the image that was built
    return pod


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    return realm_factory(groups=GROUPS, users=PEOPLE)


def assert_synced(realm: KeycloakRealm, emulator: EmulatorAdmin) -> None:
    held = teams(emulator)
    ids = realm.user_ids()
    research, platform = realm.group_id("/llm/research"), realm.group_id("/llm/platform")
    assert realm.group_id("/other") not in held
    assert members(held[research]) == {ids["alice"]: "user", ids["bob"]: "user"}
    assert members(held[platform]) == {ids["alice"]: "user"}


# --- the build ----------------------------------------------------------------------


def test_image_builds_from_the_dockerfile_as_it_is(syncd_image: BuildResult) -> None:
    """Only PYTHON_IMAGE is set; the Dockerfile is the repository's, unmodified."""
    cmd = container_image.build_command("t", syncd_image.base, [])
    assert cmd[cmd.index("--file") + 1] == str(REPO / "Dockerfile")
    build_args = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--build-arg"]
    assert build_args == [f"PYTHON_IMAGE={syncd_image.base}"]
    config = inspect(syncd_image.tag)["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["syncd"]
    assert config["Cmd"] == ["--config", "/etc/syncd/syncd.yaml"]
    assert config["Labels"]["org.opencontainers.image.version"] == VERSION
    assert set(config["ExposedPorts"]) == {"9108/tcp"}


def test_what_syncd_adds_to_the_base_is_at_most_100_mb(syncd_image: BuildResult) -> None:
    mib = 1024 * 1024
    assert 0 < syncd_image.added_bytes <= MAX_ADDED_BYTES, (
        f"syncd adds {syncd_image.added_bytes / mib:.1f} MiB to the base "
        f"({syncd_image.image_bytes / mib:.1f} MiB in all)"
    )


def test_nothing_secret_in_the_image(syncd_image: BuildResult) -> None:
    """History, labels, annotations and environment carry no credential, no
    SYNCD_ setting, and nothing of the build host (its pip settings stay out)."""
    history = json.loads(podman("history", "--no-trunc", "--format", "json",
                                syncd_image.tag).stdout)
    image = inspect(syncd_image.tag)
    texts = [h.get("CreatedBy") or "" for h in history] + [h.get("Comment") or "" for h in history]
    texts += [f"{k}={v}" for k, v in (image["Config"].get("Labels") or {}).items()]
    texts += [f"{k}={v}" for k, v in (image.get("Annotations") or {}).items()]
    env = image["Config"].get("Env") or []
    texts += env
    for text in texts:
        for pattern in SECRET_PATTERNS:
            assert not pattern.search(text), f"credential-like text in the image: {text!r}"
    names = {e.split("=", 1)[0] for e in env}
    assert not {n for n in names if n.startswith(("SYNCD_", "PIP_"))}, names
    # Nothing of the build context, the build's pip configuration or caches
    # stays behind: the image differs from its base only by the venv and the user.
    diff = json.loads(podman("diff", "--format", "json", syncd_image.base,
                             syncd_image.tag).stdout)
    touched = {path for paths in diff.values() for path in paths}
    assert any(path.startswith("/opt/syncd") for path in touched), diff
    others = {p for p in touched if not p.startswith("/opt/syncd/")} - ALLOWED_CHANGES
    assert not others, f"the build left these behind: {sorted(others)}"


def test_pip_check_is_clean_inside(syncd_image: BuildResult) -> None:
    proc = podman("run", "--rm", "--network", "none", "--read-only", "--read-only-tmpfs=false",
                  "--cap-drop", "ALL", "--entrypoint", "/opt/syncd/bin/python",
                  syncd_image.tag, "-m", "pip", "check", "--disable-pip-version-check",
                  check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No broken requirements found." in proc.stdout


def test_runs_as_non_root_with_nothing_writable(syncd_image: BuildResult) -> None:
    """As the image says (no --user): uid 10001, and with a read-only root
    filesystem and no tmpfs at all, no path syncd could write to."""
    probe = (
        "import json, os, tempfile\n"
        "paths = ['/', '/tmp', '/opt/syncd', '/opt/syncd/lib', '/etc', '/var/tmp', '/root',"
        " os.path.expanduser('~')]\n"
        "writable = [p for p in paths if os.path.isdir(p) and os.access(p, os.W_OK)]\n"
        "try:\n"
        "    tempfile.TemporaryFile()\n"
        "    temp = True\n"
        "except OSError:\n"
        "    temp = False\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'writable': writable,"
        " 'tempfile': temp}))\n"
    )
    proc = podman("run", "--rm", "--network", "none", "--read-only", "--read-only-tmpfs=false",
                  "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                  "--entrypoint", "/opt/syncd/bin/python", syncd_image.tag, "-c", probe,
                  timeout=60)
    seen = json.loads(proc.stdout)
    assert seen == {"uid": 10001, "gid": 10001, "writable": [], "tempfile": False}


# --- the CLI in the chart's pod -------------------------------------------------------


def test_version_and_validate_in_the_charts_pod(
    helm: str, syncd_image: BuildResult, tmp_path: Path
) -> None:
    repository, tag = _repo_tag(syncd_image)
    objects = render(helm, DEPLOYMENT, sets=(f"image.repository={repository}",
                                             f"image.tag={tag}"))
    pod = podman_pod(objects, tmp_path)
    assert pod.image == syncd_image.tag

    proc = podman(*pod.command(args=["--version"]), check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"syncd {VERSION}"), proc.stderr

    # The chart's configuration and secret files, mounted read-only as in the pod.
    config_path = next(a for a in pod.args if a.endswith(".yaml"))
    validate = ["validate", "--config", config_path]
    proc = podman(*pod.command(args=validate), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # It reads that file: a bad key there is one line naming it, exit 3.
    mounted = tmp_path / "volumes" / "config" / "syncd.yaml"
    config = yaml.safe_load(config_map(objects)["data"]["syncd.yaml"])
    config["safety"]["max_blockd"] = 3
    mounted.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = podman(*pod.command(args=validate), check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "max_blockd" in proc.stdout + proc.stderr


# --- a sync in the chart's pods -------------------------------------------------------


@pytest.mark.parametrize("tmp_volume", [True, False], ids=["chart-default", "no-tmp-volume"])
def test_once_as_the_cronjob_runs_it(
    helm: str, syncd_image: BuildResult, realm: KeycloakRealm, emulator: EmulatorAdmin,
    tmp_path: Path, tmp_volume: bool,
) -> None:
    """The CronJob's pod: ``--once`` with read-only root, uid 10001, no capabilities,
    no new privileges, secrets from the mounted Secret; without the /tmp volume
    too, since syncd needs no writable path."""
    pod = chart_pod(helm, syncd_image, tmp_path, mode="cronjob", realm=realm,
                    emulator=emulator, api_key=service_key(emulator),
                    values={"tmpVolume": {"enabled": tmp_volume}})
    assert pod.args[0] == "--once"
    assert pod.security["readOnlyRootFilesystem"] is True
    assert (pod.uid, pod.gid) == (10001, 10001)
    assert ("--tmpfs" in pod.options) is tmp_volume
    # The secrets come from the mounted files only, never from the environment.
    assert not [o for o in pod.options if "SYNCD_" in o or realm.client_secret in o]
    proc = podman(*pod.command(), check=False, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_synced(realm, emulator)
    # Every write was syncd's, attributed, through the service user's key.
    audit = emulator.audit()
    assert audit
    assert all(w["changed_by"] == "syncd" for w in audit), audit[:3]


class Daemon:
    """The Deployment's container, detached; stopped and removed at the end."""

    def __init__(self, pod: PodmanPod, name: str) -> None:
        self.pod, self.name = pod, name
        options = [o for o in pod.options if o != "--rm"]
        podman(*["run", "--detach", "--name", name, *options, pod.image, *pod.args],
               timeout=120)
        self.http = httpx.Client(timeout=5)

    def url(self, probe: str) -> str:
        path, port = self.pod.probes[probe]
        return f"http://127.0.0.1:{port}{path}"

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False, timeout=60)
        return proc.stdout + proc.stderr

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name,
                       check=False, timeout=60)
        return state.stdout.strip() == "true"

    def wait_ready(self, timeout: float = 90) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                response = self.http.get(self.url("readinessProbe"))
                if response.status_code == 200:
                    return response
            except httpx.TransportError:
                pass
            if not self.running():
                pytest.fail(f"the container exited:\n{self.logs()[-4000:]}")
            time.sleep(0.5)
        pytest.fail(f"/readyz never answered 200 within {timeout}s:\n{self.logs()[-4000:]}")

    def close(self) -> None:
        self.http.close()
        podman("rm", "--force", "--time", "0", self.name, check=False, timeout=120)


@pytest.fixture
def daemon_pod(
    helm: str, syncd_image: BuildResult, realm: KeycloakRealm, emulator: EmulatorAdmin,
    tmp_path: Path,
) -> PodmanPod:
    return chart_pod(helm, syncd_image, tmp_path, mode="deployment", realm=realm,
                     emulator=emulator, api_key=service_key(emulator),
                     values={"config": {"server": {"port": free_port()}}})


@pytest.fixture
def daemon(daemon_pod: PodmanPod, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(daemon_pod, f"syncd-test-{tmp_path.name}-{time.monotonic_ns()}")
    try:
        yield d
    finally:
        d.close()


def test_daemon_as_the_deployment_runs_it(
    daemon: Daemon, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    """Ready after the first sync, /healthz and /metrics served on the probes'
    port, and SIGTERM ends it cleanly well within terminationGracePeriodSeconds."""
    pod = daemon.pod
    assert pod.security["readOnlyRootFilesystem"] is True
    assert pod.grace_seconds is not None
    daemon.wait_ready()
    assert_synced(realm, emulator)  # ready means the first sync went through

    assert daemon.http.get(daemon.url("livenessProbe")).status_code == 200
    metrics_port = pod.probes["readinessProbe"][1]
    response = daemon.http.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert response.status_code == 200
    assert re.search(r"^syncd_last_success_timestamp_seconds [0-9.e+]+$", response.text,
                     re.MULTILINE), response.text[:2000]

    start = time.monotonic()
    podman("kill", "--signal", "TERM", daemon.name, timeout=60)
    proc = podman("wait", daemon.name, timeout=pod.grace_seconds + 30)
    elapsed = time.monotonic() - start
    code = int(proc.stdout.strip())
    logs = daemon.logs()
    assert code == 0, logs[-4000:]
    # "Well within" the grace period: a tenth of it (9 s of the chart's 90 s);
    # an idle daemon stops in about a second.
    assert elapsed < pod.grace_seconds / 10, f"stopped after {elapsed:.1f}s"
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert events, logs[-2000:]
    assert all(e.get("level") != "error" for e in events), [e for e in events
                                                             if e.get("level") == "error"]
