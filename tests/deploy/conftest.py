"""Shared helpers for the deployment tests: finding helm/promtool/hadolint,
rendering the chart, and the container image built once per session.

The tools come from devtools/install_tools.sh (cache bin directory) or PATH.
When one is missing the tests that need it fail under CI (env CI set) and skip
elsewhere, with the reason. The same goes for podman (``syncd_image``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import container_image

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "syncd"
CI_VALUES = CHART / "ci"
ALERTS_FILE = CHART / "files" / "alerts.yaml"
DASHBOARD_FILE = CHART / "files" / "dashboard.json"
RUNBOOK = REPO / "docs" / "runbook.md"
EXAMPLE_CONFIG = REPO / "config" / "syncd.example.yaml"

# Values files for the two modes, and the one that turns every optional part on.
DEPLOYMENT = CI_VALUES / "deployment-values.yaml"
CRONJOB = CI_VALUES / "cronjob-values.yaml"
ALL_ON = CI_VALUES / "all-on-values.yaml"

# Secret values used in ci/deployment-values.yaml: they must never show up in a
# ConfigMap.
SECRET_VALUES = ("kc-secret-value-do-not-leak", "sk-litellm-master-do-not-leak")

# A Kubernetes version for Capabilities (helm template defaults to an old one).
KUBE_VERSION = "1.31.0"


def cache_bin() -> Path:
    base = os.environ.get("SYNCD_CACHE_DIR") or str(Path.home() / ".cache" / "syncd")
    return Path(base) / "bin"


def find_tool(name: str) -> str:
    """Path of a tool: the pinned one in the cache bin directory first, then PATH."""
    cached = cache_bin() / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    found = shutil.which(name)
    if found:
        return found
    reason = (
        f"{name} not found in {cache_bin()} or on PATH; run devtools/install_tools.sh"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def syncd_image() -> Iterator[container_image.BuildResult]:
    """The repository's Dockerfile built once per test session with podman's
    buildah on the stand-in base (devtools/container_image.py), removed at the end.

    Skipped with the reason where podman cannot run, except under CI, where
    that fails; a failing build always fails.
    """
    reason = container_image.unavailable_reason()
    if reason:
        message = f"cannot build the image here: {reason}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    tag = f"localhost/syncd-test:{os.getpid()}"
    try:
        result = container_image.build(tag)
    except container_image.ContainerToolsError as exc:
        pytest.fail(f"the image did not build: {exc}", pytrace=False)
    try:
        yield result
    finally:
        container_image.remove_image(tag)


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return find_tool("promtool")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return find_tool("hadolint")


@cache
def _helm_env() -> dict[str, str]:
    """Keep helm away from the user's helm config and any cluster."""
    home = Path(tempfile.gettempdir()) / f"syncd-tests-helm-{os.getuid()}"
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=os.devnull,
    )
    return env


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, env=_helm_env(), timeout=120, check=False
    )


def _template_args(
    values: Iterable[Path], sets: Iterable[str], release: str, namespace: str
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace,
            "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    return args


@cache
def _render_cached(
    helm: str, values: tuple[Path, ...], sets: tuple[str, ...], release: str, namespace: str
) -> tuple[str, str, int]:
    proc = run_helm(helm, *_template_args(values, sets, release, namespace))
    return proc.stdout, proc.stderr, proc.returncode


def render(
    helm: str,
    *values: Path,
    sets: Iterable[str] = (),
    release: str = "syncd",
    namespace: str = "syncd",
) -> list[dict[str, Any]]:
    """`helm template` the chart and return the objects; fail on a helm error."""
    out, err, rc = _render_cached(helm, tuple(values), tuple(sets), release, namespace)
    assert rc == 0, f"helm template failed:\n{err}"
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_error(
    helm: str, *values: Path, sets: Iterable[str] = (), release: str = "syncd"
) -> str:
    """`helm template` expected to fail: return its error output."""
    out, err, rc = _render_cached(helm, tuple(values), tuple(sets), release, "syncd")
    assert rc != 0, f"helm template unexpectedly succeeded:\n{out[:2000]}"
    return err


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod spec of the Deployment or the CronJob, whichever was rendered."""
    workloads = by_kind(objects, "Deployment") + by_kind(objects, "CronJob")
    assert len(workloads) == 1, [o["kind"] for o in workloads]
    w = workloads[0]
    if w["kind"] == "Deployment":
        return dict(w["spec"]["template"]["spec"])
    return dict(w["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def pod_template_metadata(objects: list[dict[str, Any]]) -> dict[str, Any]:
    workloads = by_kind(objects, "Deployment") + by_kind(objects, "CronJob")
    w = workloads[0]
    if w["kind"] == "Deployment":
        return dict(w["spec"]["template"]["metadata"])
    return dict(w["spec"]["jobTemplate"]["spec"]["template"]["metadata"])


def config_map(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The ConfigMap holding syncd.yaml."""
    maps = [o for o in by_kind(objects, "ConfigMap") if "syncd.yaml" in o.get("data", {})]
    assert len(maps) == 1
    return maps[0]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))
