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

Simplification: the emulator only models the master key as a management
caller. A valid non-master virtual key gets a 401 that says so, where the real
proxy would run its role-based route checks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from devtools.litellm_emulator.state import State

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


def check_key(
    state: State, master_key: str, api_key: str | None, now: datetime | None = None
) -> AuthVerdict:
    """Apply ``user_api_key_auth``'s key rules to ``api_key``, in the real order."""
    now = now or datetime.now(UTC)
    if api_key is None:
        return AuthVerdict(
            False, 401, "Authentication Error, No api key passed in.", "no_key", "auth_error"
        )
    if api_key == "":
        return AuthVerdict(
            False,
            401,
            "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.",
            "malformed",
            "auth_error",
        )
    if api_key == master_key:
        return AuthVerdict(True, 200, "master key", "master_key")
    if not api_key.startswith("sk-"):
        return AuthVerdict(
            False,
            401,
            f"LiteLLM Virtual Key expected. Received={_masked(api_key)}, "
            "expected to start with 'sk-'.",
            "not_virtual_key",
            "auth_error",
        )
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
            )
        if key.blocked is True:
            return AuthVerdict(
                False,
                401,
                "Authentication Error, Key is blocked. "
                "Update via `/key/unblock` if you're an admin.",
                "key_blocked",
                "auth_error",
            )
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
            )
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
                )
        team = state.teams.get(key.team_id) if key.team_id is not None else None
        if team is not None and team.blocked:
            return AuthVerdict(
                False,
                401,
                f"Authentication Error, Team={team.team_id} is blocked. "
                "Update via `/team/unblock` if you're an admin.",
                "team_blocked",
                "auth_error",
            )
    return AuthVerdict(True, 200, "key passed all auth checks", "ok")


def check_management_caller(state: State, master_key: str, api_key: str | None) -> AuthVerdict:
    """Master key only; a valid virtual key is refused with an emulator-specific 401."""
    verdict = check_key(state, master_key, api_key)
    if verdict.rule == "ok":
        return AuthVerdict(
            False,
            401,
            "Authentication Error, litellm-emulator models only the master key as a caller of "
            "management routes.",
            "not_master_key",
            "auth_error",
        )
    return verdict
