"""Running syncd for real against a test realm and the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.litellm_emulator.core import DEFAULT_MODELS
from tests.fixtures.keycloak import KeycloakRealm

SYNCD = str(Path(sys.executable).with_name("syncd"))
SERVICE_USER = "svc-syncd"
"""The LiteLLM user of syncd's proxy_admin key (``Syncd(..., key="proxy_admin")``)."""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


class Syncd:
    """syncd as a process, configured for one realm and the emulator.

    ``key="master"`` runs on the master key; ``"proxy_admin"`` (or any other
    LiteLLM role) first creates the user ``SERVICE_USER`` with that role and a
    key for it through the emulator's API, as docs/deploy.md tells operators to.
    The default comes from ``$SYNCD_TEST_LITELLM_KEY`` (``master`` if unset).
    """

    def __init__(self, realm: KeycloakRealm, emulator: EmulatorAdmin, tmp: Path,
                 key: str | None = None, **sections: dict[str, Any]) -> None:
        self.realm, self.emulator, self.tmp = realm, emulator, tmp
        self.config: dict[str, Any] = {
            "keycloak": {"url": realm.url, "realm": realm.name, "client_id": realm.client_id},
            "litellm": {"url": emulator.url},
            "selection": {"path_prefixes": ["/llm"]},
            "logging": {"format": "json"},
            "retries": {"max_attempts": 2, "initial_backoff_seconds": 0.05},
        }
        for name, values in sections.items():
            self.config.setdefault(name, {}).update(values)
        # SYNCD_TEST_LITELLM_KEY=proxy_admin runs the whole suite on a proxy_admin key
        key = key or os.environ.get("SYNCD_TEST_LITELLM_KEY", "master")
        api_key = emulator.master_key
        if key != "master":
            emulator.create_user(SERVICE_USER, user_role=key)
            api_key = emulator.generate_key(user_id=SERVICE_USER, key_alias="syncd")["key"]
            emulator.clear_audit()  # the operator's one-time setup is not syncd's writing
        self.api_key = api_key
        self.env = {
            "SYNCD_KEYCLOAK__CLIENT_SECRET": realm.client_secret,
            "SYNCD_LITELLM__API_KEY": api_key,
        }

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        path = self.tmp / "syncd.yaml"
        path.write_text(yaml.safe_dump(self.config))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
        full_env.update(self.env)
        full_env.update(env or {})
        proc = subprocess.run([SYNCD, "--config", str(path), *args], capture_output=True,
                              text=True, env=full_env, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def once(self, *args: str, **kw: Any) -> Result:
        return self.run("--once", "--json", *args, **kw)


def writes(emulator: EmulatorAdmin) -> list[dict[str, Any]]:
    return emulator.audit()


def teams(emulator: EmulatorAdmin) -> dict[str, dict[str, Any]]:
    return {t["team_id"]: t for t in emulator.state()["teams"]}


def members(team: dict[str, Any]) -> dict[str, str]:
    return {m["user_id"]: m["role"] for m in team["members_with_roles"]
            if m.get("user_id") and m["user_id"] not in ("default_user_id", SERVICE_USER)}


def users(emulator: EmulatorAdmin) -> dict[str, dict[str, Any]]:
    return {u["user_id"]: u for u in emulator.state()["users"]}


def answers(emulator: EmulatorAdmin, key: str) -> int:
    """Status of an LLM call with ``key``, as an application would make it."""
    response = httpx.post(
        f"{emulator.url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": DEFAULT_MODELS[0], "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    return response.status_code
