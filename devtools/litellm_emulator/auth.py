"""Who may call the emulator, and whether a virtual key would be let in.

Two questions, answered with the real proxy's rules and messages:

* management calls: the key comes from ``x-litellm-api-key`` (wins, with or
  without ``Bearer``) or ``Authorization: Bearer``; the master key acts as proxy
  admin ``default_user_id``. (litellm 1.110.2
  ``proxy/auth/user_api_key_auth.py::get_api_key``, ``get_bearer_token``,
  ``user_api_key_auth_builder``.)
* ``POST /_emulator/auth_check``: would an LLM call with this ``sk-`` key pass
  auth? Checked in the real order: unknown/deleted key, blocked key, owner's
  ``metadata.scim_active is False``, expiry, blocked team
  (``validate_resolved_virtual_key`` and ``auth_checks.py::common_checks``).

Every authenticated caller becomes a ``Caller``: the master key acts as proxy
admin ``default_user_id``; a virtual key acts as its owner, with the owner
row's ``user_role``. Non-admin callers then go through the route checks of
``auth/route_checks.py::non_proxy_admin_allowed_routes_check`` (``route_check``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devtools.litellm_emulator.state import ADMIN_USER_ID, State

LITELLM_PROXY_MASTER_KEY_ALIAS = "litellm_proxy_master_key"
"""``litellm.constants``: what ``user_api_key_dict.api_key`` holds for the master key."""

PROXY_ADMIN = "proxy_admin"
INTERNAL_USER = "internal_user"

MODEL_ACCESS_DENIED_MESSAGE = (
    "The requested model '{model}' is not available for this API key, or the model name is "
    "invalid. Check the models available to you and try again."
)
"""``auth/model_access_denied.py::MODEL_ACCESS_DENIED_CLIENT_MESSAGE``."""

MINIMUM_CUSTOM_KEY_LENGTH = 16
"""``litellm.constants.MINIMUM_CUSTOM_KEY_LENGTH`` (env default 16)."""


def hash_token(token: str) -> str:
    """``litellm.proxy.utils.hash_token``: sha256 hex digest of the raw key."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_token_if_needed(token: str) -> str:
    """``litellm.proxy.utils.hash_token_if_needed``: ``sk-`` keys are hashed, hashes pass."""
    return hash_token(token) if token.startswith("sk-") else token


def abbreviate_api_key(api_key: str) -> str:
    """``auth_utils.abbreviate_api_key``: the ``key_name`` stored on the row."""
    if len(api_key) < MINIMUM_CUSTOM_KEY_LENGTH:
        return "sk-..."
    return f"sk-...{api_key[-4:]}"


def _strip_prefixes(value: str) -> str:
    """``_get_bearer_token_or_received_api_key``: used for ``x-litellm-api-key``."""
    for prefix in ("Bearer ", "Basic ", "bearer "):
        if value.startswith(prefix):
            return value.replace(prefix, "")
    return value


def _bearer_token(value: str) -> str:
    """``get_bearer_token``: ``Authorization`` without a known prefix yields ``""``."""
    for prefix in ("Bearer ", "Basic ", "bearer "):
        if value.startswith(prefix):
            return value.replace(prefix, "")
    return ""


def extract_api_key(custom_header: str | None, authorization: str | None) -> str | None:
    """The key the proxy would read; ``None`` when neither header carries one.

    FastAPI's ``APIKeyHeader(auto_error=False)`` turns an empty header into
    ``None``, so empty counts as absent for both.
    """
    if custom_header:
        return _strip_prefixes(custom_header)
    if authorization:
        return _bearer_token(authorization)
    return None


@dataclass(frozen=True)
class AuthVerdict:
    """What the proxy would answer; ``rule`` is a stable name tests can assert on."""

    allowed: bool
    status: int
    reason: str
    rule: str
    error_type: str | None = None
    param: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "status": self.status,
            "reason": self.reason,
            "rule": self.rule,
            "type": self.error_type,
            "param": self.param,
        }


def _masked(api_key: str) -> str:
    return f"{api_key[:4]}****{api_key[-4:]}" if len(api_key) > 8 else "****"


@dataclass(frozen=True)
class Caller:
    """Who a request runs as: the fields of ``UserAPIKeyAuth`` the emulator reads.

    ``user_role`` is the owner row's role (``None`` without an owner row), which is
    what ``common_checks`` hands the route checks; ``api_key`` is what
    ``user_api_key_dict.api_key`` holds: the master-key alias, or the key's hash.
    """

    user_id: str | None
    user_role: str | None
    api_key: str
    is_master: bool = False
    token: str | None = None
    team_id: str | None = None
    has_owner: bool = True

    @property
    def is_proxy_admin(self) -> bool:
        """``auth_checks.py::is_user_proxy_admin`` (the master key is forced to admin)."""
        return self.is_master or self.user_role == PROXY_ADMIN


MASTER_CALLER = Caller(
    user_id=ADMIN_USER_ID,
    user_role=PROXY_ADMIN,
    api_key=LITELLM_PROXY_MASTER_KEY_ALIAS,
    is_master=True,
)


def _model_allowed(model: str, models: list[Any]) -> bool:
    """``check_model_access_helper``: an empty list, ``*`` or ``all-proxy-models`` allow all."""
    if not models or "*" in models or "all-proxy-models" in models:
        return True
    return model in models


def check_key(
    state: State,
    master_key: str,
    api_key: str | None,
    now: datetime | None = None,
    *,
    model: str | None = None,
) -> AuthVerdict:
    """Apply ``user_api_key_auth``'s key rules to ``api_key``, in the real order."""
    return resolve_caller(state, master_key, api_key, now, model=model)[0]


def resolve_caller(
    state: State,
    master_key: str,
    api_key: str | None,
    now: datetime | None = None,
    *,
    model: str | None = None,
) -> tuple[AuthVerdict, Caller | None]:
    """The verdict of ``user_api_key_auth`` and, when it lets the key in, the caller.

    Order (``user_api_key_auth_builder`` → ``validate_resolved_virtual_key`` →
    ``run_centralized_common_checks`` → ``common_checks``): unknown/deleted key,
    blocked key, key model access (only with a ``model``), owner
    ``scim_active is False``, expiry, blocked team, team model access.
    """
    now = now or datetime.now(UTC)
    if api_key is None:
        return AuthVerdict(
            False, 401, "Authentication Error, No api key passed in.", "no_key", "auth_error"
        ), None
    if api_key == "":
        return AuthVerdict(
            False,
            401,
            "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.",
            "malformed",
            "auth_error",
        ), None
    if api_key == master_key:
        return AuthVerdict(True, 200, "master key", "master_key"), MASTER_CALLER
    if not api_key.startswith("sk-"):
        return AuthVerdict(
            False,
            401,
            f"LiteLLM Virtual Key expected. Received={_masked(api_key)}, "
            "expected to start with 'sk-'.",
            "not_virtual_key",
            "auth_error",
        ), None
    token = hash_token(api_key)
    with state.lock:
        key = state.keys.get(token)
        if key is None:
            deleted = state.find_deleted_key(token) is not None
            return AuthVerdict(
                False,
                401,
                "Authentication Error, Invalid API key provided.",
                "key_deleted" if deleted else "key_not_found",
                "token_not_found_in_db",
                "key",
            ), None
        if key.blocked is True:
            return AuthVerdict(
                False,
                401,
                "Authentication Error, Key is blocked. "
                "Update via `/key/unblock` if you're an admin.",
                "key_blocked",
                "auth_error",
            ), None
        # enforce_key_and_fallback_model_access runs right after the blocked check
        if (
            model is not None
            and "all-team-models" not in key.models
            and not _model_allowed(model, key.models)
        ):
            return AuthVerdict(
                False,
                403,
                MODEL_ACCESS_DENIED_MESSAGE.format(model=model),
                "key_model_access_denied",
                "key_model_access_denied",
                "model",
            ), None
        owner = state.users.get(key.user_id) if key.user_id is not None else None
        if (
            owner is not None
            and isinstance(owner.metadata, dict)
            and owner.metadata.get("scim_active") is False
        ):
            return AuthVerdict(
                False,
                401,
                f"Authentication Error, User={key.user_id} has been deactivated via SCIM. "
                "Keys owned by this user cannot be used.",
                "user_deactivated",
                "auth_error",
            ), None
        if key.expires is not None:
            expires = key.expires if key.expires.tzinfo else key.expires.replace(tzinfo=UTC)
            if expires < now:
                return AuthVerdict(
                    False,
                    401,
                    f"Authentication Error - Expired Key. Key Expiry time {expires} "
                    f"and current time {now}",
                    "key_expired",
                    "expired_key",
                    # the real code abbreviates the already-hashed key here
                    abbreviate_api_key(token),
                ), None
        team = state.teams.get(key.team_id) if key.team_id is not None else None
        if team is not None and team.blocked:
            return AuthVerdict(
                False,
                401,
                f"Authentication Error, Team={team.team_id} is blocked. "
                "Update via `/team/unblock` if you're an admin.",
                "team_blocked",
                "auth_error",
            ), None
        if model is not None and team is not None and not _model_allowed(model, team.models):
            return AuthVerdict(
                False,
                403,
                MODEL_ACCESS_DENIED_MESSAGE.format(model=model),
                "team_model_access_denied",
                "team_model_access_denied",
                "model",
            ), None
        caller = Caller(
            user_id=key.user_id,
            user_role=owner.user_role if owner is not None else None,
            api_key=token,
            token=token,
            team_id=key.team_id,
            has_owner=owner is not None,
        )
    return AuthVerdict(True, 200, "key passed all auth checks", "ok"), caller


LLM_ROUTES = frozenset({"/chat/completions", "/v1/chat/completions", "/models", "/v1/models"})
"""The ``LiteLLMRoutes.openai_routes`` the emulator serves."""

INFO_ROUTES = frozenset({"/key/info", "/user/info", "/team/info", "/team/list", "/v2/team/list"})
"""The ``LiteLLMRoutes.info_routes`` the emulator serves (endpoints check the rest)."""

INTERNAL_USER_ROUTES = frozenset(
    {"/key/generate", "/key/update", "/key/delete", "/key/list", "/key/block", "/key/unblock"}
)
"""The ``LiteLLMRoutes.internal_user_routes`` the emulator serves."""

SELF_MANAGED_ROUTES = frozenset(
    {"/team/member_add", "/team/member_delete", "/team/member_update", "/team/update", "/user/list"}
)
"""The ``LiteLLMRoutes.self_managed_routes`` the emulator serves (endpoints check the caller)."""


def mask_user_id(user_id: str) -> str:
    """``RouteChecks._mask_user_id``: LiteLLM's own masker, 6 characters in front, 2 behind."""
    from litellm.litellm_core_utils.sensitive_data_masker import SensitiveDataMasker

    if not user_id or len(user_id) <= 4:
        return "***"
    masked: str = SensitiveDataMasker(
        visible_prefix=6, visible_suffix=2, mask_char="*"
    ).mask_value(user_id)
    return masked


def route_check(caller: Caller, route: str) -> AuthVerdict | None:
    """``non_proxy_admin_allowed_routes_check`` for the routes the emulator serves.

    ``None``: allowed at the auth layer (the endpoint may still refuse). Proxy
    admins skip it (``_is_api_route_allowed``). ``route`` is the route template.
    """
    if caller.is_proxy_admin:
        return None
    if route in LLM_ROUTES or route in INFO_ROUTES or route in SELF_MANAGED_ROUTES:
        return None
    # effective_user_role: a role string the proxy does not know counts as internal_user;
    # without an owner row there is no role at all.
    if caller.user_role is not None and route in INTERNAL_USER_ROUTES:
        known = {PROXY_ADMIN, "proxy_admin_viewer", "internal_user_viewer", "team", "customer"}
        if caller.user_role == INTERNAL_USER or caller.user_role not in known:
            return None
    # _raise_admin_only_route_exception: "unknown" without an owner row
    role = (caller.user_role or "unknown") if caller.has_owner else "unknown"
    user_id = mask_user_id(caller.user_id or "unknown") if caller.has_owner else "unknown"
    return AuthVerdict(
        False,
        401,
        "Authentication Error, Only proxy admin can be used to generate, delete, update info "
        f"for new keys/users/teams. Route={route}. Your role={role}. Your user_id={user_id}",
        "admin_only_route",
        "auth_error",
    )
