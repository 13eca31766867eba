"""``EmulatorAdmin``: a small synchronous client for the emulator's admin API.

Tests use it to reset the emulator, steer faults and behaviour switches, read
state, counters and the audit log, ask whether a key would authenticate, and
seed data. Seeding goes through the normal LiteLLM API (``/team/new``,
``/user/new``, ``/key/generate``...) so seeded rows look exactly like rows
syncd would have created. Only depends on httpx, so it can be imported without
LiteLLM installed.
"""

from __future__ import annotations

import ssl
from functools import cache
from types import TracebackType
from typing import Any

import httpx

SEED_ACTOR = "emulator-seed"
"""``litellm-changed-by`` on seeding writes, so audit checks can tell them from syncd's."""


@cache
def _ssl_context() -> ssl.SSLContext:
    """One shared context: httpx builds (slowly, ~50 ms) a new one per client otherwise."""
    return ssl.create_default_context()


class EmulatorAdminError(RuntimeError):
    """An admin or seeding call got a non-2xx answer."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text}"
        )
        self.response = response


class EmulatorAdmin:
    """Admin/seeding client for one emulator at ``url`` with ``master_key``."""

    def __init__(self, url: str, master_key: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.master_key = master_key
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {master_key}"},
            timeout=timeout,
            verify=_ssl_context(),
        )

    # -- plumbing ---------------------------------------------------------------

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> EmulatorAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def client(self, **kwargs: Any) -> httpx.Client:
        """A fresh httpx client for the emulated API, authenticated with the master key."""
        headers = {"Authorization": f"Bearer {self.master_key}", **kwargs.pop("headers", {})}
        kwargs.setdefault("verify", _ssl_context())
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 10.0), **kwargs
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 300:
            raise EmulatorAdminError(response)
        return response.json()

    def _write(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json=body, headers={"litellm-changed-by": SEED_ACTOR})

    # -- admin API --------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Teams, users, keys, memberships, archives, audit log, consistency problems, settings."""
        result: dict[str, Any] = self._call("GET", "/_emulator/state")
        return result

    def reset(self) -> None:
        """Empty state and counters; settings and faults back to the start-up configuration."""
        self._call("POST", "/_emulator/reset")

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_emulator/faults")
        return result

    def set_faults(
        self, rules: list[dict[str, Any]] | None = None, *, seed: int | None = None
    ) -> dict[str, Any]:
        """Replace the fault rules (fields: ``faults.FaultRule``); no rules turns faults off."""
        result: dict[str, Any] = self._call(
            "PUT", "/_emulator/faults", json={"seed": seed, "rules": rules or []}
        )
        return result

    def clear_faults(self) -> None:
        self.set_faults([])

    def costs(self) -> dict[str, Any]:
        """The cost model (``costs.CostModel``) plus ``expired`` and ``races`` so far."""
        result: dict[str, Any] = self._call("GET", "/_emulator/costs")
        return result

    def set_costs(self, model: dict[str, Any] | str) -> dict[str, Any]:
        """Replace the cost model: a ``CostModel`` dict, or a profile name ("off",
        "real-1.110.2")."""
        from devtools.litellm_emulator.costs import PROFILES

        body = PROFILES[model].model_dump() if isinstance(model, str) else model
        result: dict[str, Any] = self._call("PUT", "/_emulator/costs", json=body)
        return result

    def counters(self) -> dict[str, Any]:
        """``{"paths": {path: {"reads", "writes"}}, "total": {...}, "faults": {kind: n}}``."""
        result: dict[str, Any] = self._call("GET", "/_emulator/counters")
        return result

    def reset_counters(self) -> None:
        self._call("POST", "/_emulator/counters/reset")

    def auth_check(self, key: str | None) -> dict[str, Any]:
        """``{"allowed", "status", "reason", "rule", "type", "param"}`` for a call with ``key``."""
        result: dict[str, Any] = self._call("POST", "/_emulator/auth_check", json={"key": key})
        return result

    def settings(
        self,
        *,
        auto_add_proxy_admin: bool | None = None,
        delete_keys_on_member_delete: bool | None = None,
        licensed: bool | None = None,
    ) -> dict[str, bool]:
        """Read the behaviour switches, changing those given."""
        body = {
            "auto_add_proxy_admin": auto_add_proxy_admin,
            "delete_keys_on_member_delete": delete_keys_on_member_delete,
            "licensed": licensed,
        }
        changes = {k: v for k, v in body.items() if v is not None}
        if not changes:
            result: dict[str, bool] = self._call("GET", "/_emulator/settings")
            return result
        result = self._call("PUT", "/_emulator/settings", json=changes)
        return result

    def audit(self) -> list[dict[str, Any]]:
        audit: list[dict[str, Any]] = self.state()["audit"]
        return audit

    def clear_audit(self) -> None:
        """Forget the writes so far (e.g. a fixture's seeding), keep every table."""
        self._call("POST", "/_emulator/audit/clear")

    # -- seeding through the LiteLLM API ---------------------------------------

    def create_team(
        self, team_id: str | None = None, team_alias: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        body = {"team_id": team_id, "team_alias": team_alias, **fields}
        result: dict[str, Any] = self._write(
            "/team/new", {k: v for k, v in body.items() if v is not None}
        )
        return result

    def create_user(
        self, user_id: str | None = None, *, auto_create_key: bool = False, **fields: Any
    ) -> dict[str, Any]:
        """``/user/new``; unlike LiteLLM's default, no personal key unless asked for."""
        body = {"user_id": user_id, "auto_create_key": auto_create_key, **fields}
        result: dict[str, Any] = self._write(
            "/user/new", {k: v for k, v in body.items() if v is not None}
        )
        return result

    def generate_key(self, **fields: Any) -> dict[str, Any]:
        """``/key/generate``; the answer's ``key`` is the raw ``sk-`` key, ``token`` its hash."""
        result: dict[str, Any] = self._write("/key/generate", fields)
        return result

    def add_member(self, team_id: str, user_id: str, role: str = "user") -> dict[str, Any]:
        result: dict[str, Any] = self._write(
            "/team/member_add", {"team_id": team_id, "member": {"user_id": user_id, "role": role}}
        )
        return result
