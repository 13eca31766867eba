"""The same end-to-end sync against containers: Keycloak's image, and the real LiteLLM
proxy image with PostgreSQL. Needs a Docker engine; skipped with the reason otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devtools.realm import build_realm, demo_realm

KEYCLOAK_IMAGE = "quay.io/keycloak/keycloak:26.4"
LITELLM_IMAGE = "ghcr.io/berriai/litellm-database:main-v1.110.2"
POSTGRES_IMAGE = "postgres:16-alpine"
MASTER_KEY = "sk-containers-master-key"


def _docker_reason() -> str | None:
    try:
        import docker  # testcontainers' dependency
    except ImportError as exc:  # pragma: no cover
        return f"docker SDK not installed: {exc}"
    try:
        docker.from_env().ping()
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__}); testcontainers needs one"
    return None


pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(_docker_reason() is not None, reason=str(_docker_reason())),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    from testcontainers.keycloak import KeycloakContainer
    from testcontainers.postgres import PostgresContainer

    with Network() as net, KeycloakContainer(KEYCLOAK_IMAGE) as kc, PostgresContainer(
        POSTGRES_IMAGE, username="litellm", password="litellm", dbname="litellm"
    ).with_network(net).with_network_aliases("db") as _pg:
        litellm = (
            DockerContainer(LITELLM_IMAGE)
            .with_network(net)
            .with_env("DATABASE_URL", "postgresql://litellm:litellm@db:5432/litellm")
            .with_env("LITELLM_MASTER_KEY", MASTER_KEY)
            .with_exposed_ports(4000)
        )
        with litellm:
            url = f"http://{litellm.get_container_host_ip()}:{litellm.get_exposed_port(4000)}"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/health/liveliness", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(3)
            kc_url = kc.get_url()
            token = httpx.post(
                f"{kc_url}/realms/master/protocol/openid-connect/token",
                data={"grant_type": "password", "client_id": "admin-cli",
                      "username": kc.username, "password": kc.password},
            ).json()["access_token"]
            httpx.post(f"{kc_url}/admin/realms", json=demo_realm(),
                       headers={"Authorization": f"Bearer {token}"}).raise_for_status()
            yield {"keycloak": kc_url, "litellm": url}


def _run(config: dict[str, Any], tmp: Path, *args: str) -> dict[str, Any]:
    path = tmp / "syncd.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([str(Path(sys.executable).with_name("syncd")), "--config", str(path),
                          "--once", "--json", *args], capture_output=True, text=True, timeout=300)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_full_sync_against_real_litellm(stack: dict[str, str], tmp_path: Path) -> None:
    assert build_realm  # the same builder as the local suite
    config = {
        "keycloak": {"url": stack["keycloak"], "realm": "acme", "client_id": "syncd",
                     "client_secret": "demo-secret-change-me"},
        "litellm": {"url": stack["litellm"], "api_key": MASTER_KEY},
        "selection": {"path_prefixes": ["/llm"]},
    }
    first = _run(config, tmp_path)
    assert first["exit_code"] == 0, first
    assert first["summary"]["applied"] > 150
    second = _run(config, tmp_path)
    assert second["exit_code"] == 0 and second["summary"]["ll_writes"] == 0
