"""Shared pieces of the emulator: settings, the per-app context, and helpers every router uses.

LiteLLM is imported here, once, with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` set
first, or the import tries to download a price table (there is no network).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request
from litellm.litellm_core_utils.duration_parser import duration_in_seconds
from litellm.proxy._types import (
    CommonProxyErrors,
    LiteLLM_ManagementEndpoint_MetadataFields,
    LiteLLM_ManagementEndpoint_MetadataFields_Premium,
    LiteLLM_TeamTable,
    LiteLLM_UserTable,
    LiteLLM_VerificationToken,
)
from litellm.proxy.common_utils.timezone_utils import budget_duration_error, get_budget_reset_time
from pydantic import BaseModel

from devtools.litellm_emulator.auth import (
    Caller,
    extract_api_key,
    resolve_caller,
    route_check,
)
from devtools.litellm_emulator.costs import CostMeter, CostModel
from devtools.litellm_emulator.errors import EmulatorHTTPError, openai_error, proxy_error
from devtools.litellm_emulator.faults import Counters, FaultConfig, FaultInjector, WriteRecord
from devtools.litellm_emulator.state import AuditEntry, State, utcnow

LITELLM_VERSION = "1.110.2"

PYDANTIC_ALIAS_WARNING = r"The 'alias' attribute with value 'data'"
"""Harmless pydantic warning raised once per route when FastAPI first builds a LiteLLM model."""
warnings.filterwarnings("ignore", message=PYDANTIC_ALIAS_WARNING, category=UserWarning)

METADATA_FIELDS: tuple[str, ...] = tuple(LiteLLM_ManagementEndpoint_MetadataFields)
PREMIUM_METADATA_FIELDS: tuple[str, ...] = tuple(LiteLLM_ManagementEndpoint_MetadataFields_Premium)
NOT_PREMIUM = CommonProxyErrors.not_premium_user.value


DEFAULT_MODELS: tuple[str, ...] = ("fake-gpt-4o-mini", "fake-claude-haiku")
"""The fake models the emulator serves on ``/v1/models`` and ``/chat/completions``."""


@dataclass
class EmulatorSettings:
    """Start-up configuration; the three behaviour flags can also change at run time.

    * ``auto_add_proxy_admin``: ``/team/new`` appends the caller (``default_user_id``)
      as team admin; False is ``general_settings.disable_auto_add_proxy_admin_to_teams: true``.
    * ``delete_keys_on_member_delete``: ``/team/member_delete`` hard-deletes the
      member's keys on that team (LiteLLM since late 2025); False is the older
      behaviour that left them working.
    * ``licensed``: an enterprise licence, which lifts the "premium feature"
      refusals (team admins on member_add/member_update, tags, guardrails...).
    * ``models``: the proxy's ``model_list`` (start-up only): fake models that
      answer a canned completion.
    """

    master_key: str = "sk-emulator-master-key"
    auto_add_proxy_admin: bool = True
    delete_keys_on_member_delete: bool = True
    licensed: bool = False
    faults: FaultConfig = field(default_factory=FaultConfig)
    models: tuple[str, ...] = DEFAULT_MODELS
    costs: CostModel = field(default_factory=CostModel)

    def behaviour(self) -> dict[str, bool]:
        return {
            "auto_add_proxy_admin": self.auto_add_proxy_admin,
            "delete_keys_on_member_delete": self.delete_keys_on_member_delete,
            "licensed": self.licensed,
        }


class Emulator:
    """Everything one running emulator holds: state, behaviour flags, faults, counters."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.initial = dataclasses.replace(settings, faults=settings.faults.model_copy(deep=True))
        self.settings = dataclasses.replace(settings, faults=settings.faults.model_copy(deep=True))
        self.state = State()
        self.counters = Counters()
        self.injector = FaultInjector(self.settings.faults)
        self.costs = CostMeter(self.settings.costs)

    def reset(self) -> None:
        """Back to the start-up configuration with empty tables and counters."""
        self.state.clear()
        self.counters.reset()
        self.settings = dataclasses.replace(
            self.initial, faults=self.initial.faults.model_copy(deep=True)
        )
        self.injector.configure(self.settings.faults)
        self.costs.configure(self.settings.costs)

    def record_write(self, record: WriteRecord) -> None:
        with self.state.lock:
            self.state.audit.append(
                AuditEntry(
                    at=utcnow(),
                    method=record.method,
                    path=record.path,
                    status=record.status,
                    changed_by=record.changed_by,
                    query=record.query,
                )
            )


def get_emulator(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


def _raise_for(verdict: Any) -> None:
    raise proxy_error(
        verdict.status, verdict.reason, verdict.error_type or "auth_error", verdict.param
    )


def authenticate(request: Request, *, model: str | None = None) -> Caller:
    """``user_api_key_auth`` for one request: the caller, or the proxy's refusal (E3)."""
    emulator = get_emulator(request)
    api_key = extract_api_key(
        request.headers.get("x-litellm-api-key"), request.headers.get("authorization")
    )
    verdict, caller = resolve_caller(
        emulator.state, emulator.settings.master_key, api_key, model=model
    )
    if not verdict.allowed or caller is None:
        _raise_for(verdict)
    assert caller is not None
    request.state.caller = caller
    return caller


def require_caller(request: Request) -> None:
    """FastAPI dependency of every emulated management route: key auth, then route checks.

    The route is the matched template (``/team/{team_id}``), as the proxy checks it.
    """
    caller = authenticate(request)
    route = getattr(request.scope.get("route"), "path", request.url.path)
    refusal = route_check(caller, route)
    if refusal is not None:
        _raise_for(refusal)


def current_caller(request: Request) -> Caller:
    """The caller ``require_caller`` resolved for this request."""
    caller: Caller = request.state.caller
    return caller


def require_master_key(request: Request) -> None:
    """FastAPI dependency of the ``/_emulator/`` admin routes: the master key only.

    A valid virtual key (even a proxy admin's) is refused: these routes are the
    emulator's, not LiteLLM's, and tests rely on them being unreachable otherwise.
    """
    caller = authenticate(request)
    if not caller.is_master:
        raise proxy_error(
            401,
            "Authentication Error, the litellm-emulator admin routes need the master key.",
            "auth_error",
            None,
        )


def changed_by(request: Request) -> str | None:
    return request.headers.get("litellm-changed-by")


# -- validation helpers shared by the routers ----------------------------------


def check_non_negative(name: str, value: float | None) -> None:
    """``<name> must be a non-negative finite number`` (400, ``{"error": ...}`` detail)."""
    if value is not None and (not math.isfinite(value) or value < 0):
        raise _Detail(
            400, {"error": f"{name} must be a non-negative finite number. Received: {value}"}
        )


def check_budget_duration(value: str | None) -> None:
    """``common_utils.validate_budget_duration``."""
    error = budget_duration_error(value)
    if error is not None:
        raise _Detail(400, {"error": error})


def budget_reset_at(value: str | None) -> datetime | None:
    return get_budget_reset_time(budget_duration=value) if value is not None else None


def expires_from_duration(duration: str | None) -> datetime | None:
    """``generate_key_helper_fn``: ``duration`` becomes an absolute ``expires``."""
    if duration is None:
        return None
    return datetime.now(UTC) + timedelta(seconds=duration_in_seconds(duration))


def require_licence(emulator: Emulator, feature: str) -> None:
    """``proxy/utils.py::require_enterprise_license`` (403, ``{"error": ...}`` detail)."""
    if not emulator.settings.licensed:
        raise _Detail(
            403,
            {
                "error": "This feature is only available for LiteLLM Enterprise users: "
                f"{feature}. {NOT_PREMIUM}"
            },
        )


def move_metadata_fields(
    emulator: Emulator, values: dict[str, Any], metadata: dict[str, Any]
) -> None:
    """``set_object_metadata_field``: limit/guardrail fields are stored inside ``metadata``."""
    for name in PREMIUM_METADATA_FIELDS:
        value = values.pop(name, None)
        if value is not None:
            if value:
                require_licence(emulator, name)
            metadata[name] = value
    for name in METADATA_FIELDS:
        value = values.pop(name, None)
        if value is not None:
            metadata[name] = value


class _Detail(Exception):
    """An ``HTTPException(status, detail)`` raised inside a handler before its shape is known.

    Routers convert it with ``as_openai`` (E1) or ``as_detail`` (E2) depending on
    how the real endpoint lets exceptions out.
    """

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


HTTPDetail = _Detail


def as_openai(exc: _Detail) -> EmulatorHTTPError:
    return openai_error(exc.status, exc.detail)


# -- serialisation through LiteLLM's own response models -----------------------


def team_model(row: dict[str, Any]) -> LiteLLM_TeamTable:
    return LiteLLM_TeamTable.model_validate(row)


def user_model(row: dict[str, Any]) -> LiteLLM_UserTable:
    return LiteLLM_UserTable.model_validate(row)


def key_model(row: dict[str, Any]) -> LiteLLM_VerificationToken:
    return LiteLLM_VerificationToken.model_validate(row)


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dump of a pydantic model (datetimes as ISO strings)."""
    return model.model_dump(mode="json")
