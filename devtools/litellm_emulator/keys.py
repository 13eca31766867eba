"""Virtual-key endpoints.

Follows litellm 1.110.2 ``proxy/management_endpoints/key_management_endpoints.py``.

Keys are stored by ``token`` = sha256 hex of the ``sk-`` key (``hash_token``);
the raw key is returned once by ``/key/generate`` and never stored, as in the
real database. Errors: ``generate_key_fn``/``delete_key_fn``/``info_key_fn``
go through ``handle_exception_on_proxy`` (E1, ProxyExceptions kept as E3),
``update_key_fn``/``list_keys`` through ``proxy_exception_for``, and
``block_key``/``unblock_key`` raise ``ProxyException`` directly (E3).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from litellm.litellm_core_utils.duration_parser import duration_in_seconds
from litellm.proxy._types import (
    BlockKeyRequest,
    GenerateKeyRequest,
    GenerateKeyResponse,
    KeyListResponseObject,
    KeyRequest,
    LiteLLM_DeletedVerificationToken,
    LiteLLM_VerificationToken,
    UpdateKeyRequest,
    UserAPIKeyAuth,
)

from devtools.litellm_emulator.auth import (
    MINIMUM_CUSTOM_KEY_LENGTH,
    abbreviate_api_key,
    hash_token,
    hash_token_if_needed,
)
from devtools.litellm_emulator.core import (
    METADATA_FIELDS,
    PREMIUM_METADATA_FIELDS,
    Emulator,
    HTTPDetail,
    as_openai,
    changed_by,
    check_budget_duration,
    check_non_negative,
    current_caller,
    dump,
    get_emulator,
    key_model,
    move_metadata_fields,
    require_caller,
)
from devtools.litellm_emulator.errors import openai_error, proxy_error
from devtools.litellm_emulator.state import ADMIN_USER_ID, UI_TEAM_ID, KeyRow, utcnow

router = APIRouter(dependencies=[Depends(require_caller)])

EmulatorDep = Annotated[Emulator, Depends(get_emulator)]

LENGTH_OF_LITELLM_GENERATED_KEY = 16
_VALID_KEY = re.compile(r"^sk-[A-Za-z0-9_-]+$")
_VALID_HASH = re.compile(r"^[a-fA-F0-9]{64}$")
_KEY_COLUMNS = frozenset(LiteLLM_VerificationToken.model_fields)


def mint_key(
    emulator: Emulator,
    *,
    raw_key: str | None,
    user_id: str | None,
    team_id: str | None,
    key_alias: str | None,
    metadata: dict[str, Any],
    models: list[Any],
    max_budget: float | None,
    duration: str | None,
    blocked: bool | None,
    created_by: str | None,
    extra: dict[str, Any] | None = None,
) -> tuple[str, KeyRow]:
    """``generate_key_helper_fn``'s key insert: the row a real key gets, and its raw value.

    Shared by ``/key/generate`` and ``/user/new`` (``auto_create_key``).
    Caller holds the state lock.
    """
    token = raw_key or f"sk-{secrets.token_urlsafe(LENGTH_OF_LITELLM_GENERATED_KEY)}"
    expires = None
    if duration is not None:
        expires = datetime.now(UTC) + timedelta(seconds=duration_in_seconds(duration))
    now = utcnow()
    row = KeyRow(
        token=hash_token(token),
        key_name=abbreviate_api_key(token),
        key_alias=key_alias,
        user_id=user_id,
        team_id=team_id,
        blocked=blocked,
        metadata=metadata,
        expires=expires,
        models=models,
        max_budget=max_budget,
        created_by=created_by,
        updated_by=created_by,
        created_at=now,
        updated_at=now,
        extra=dict(extra or {}),
    )
    emulator.state.keys[row.token] = row
    return token, row


def _check_key_alias(
    emulator: Emulator, key_alias: str | None, exclude_token: str | None = None
) -> None:
    """``_validate_key_alias_format`` + ``_enforce_unique_key_alias`` (both ProxyExceptions, E3)."""
    if key_alias is None:
        return
    if any(not ch.isprintable() for ch in key_alias) or ".." in key_alias.split("/"):
        raise proxy_error(
            400,
            "Invalid key_alias: must not contain control characters (such as tab or newline) "
            'or a ".." path segment',
            "bad_request_error",
            "key_alias",
        )
    for key in emulator.state.keys.values():
        if key.key_alias == key_alias and key.token != exclude_token:
            raise proxy_error(
                400,
                f"Key with alias '{key_alias}' already exists. "
                "Unique key aliases across all keys are required.",
                "bad_request_error",
                "key_alias",
            )


@router.post("/key/generate", response_model=GenerateKeyResponse)
async def generate_key_fn(data: GenerateKeyRequest, request: Request, emulator: EmulatorDep) -> Any:
    """``key_management_endpoints.py::generate_key_fn`` + ``_common_key_generation_helper``.

    The key's user is *not* created (``table_name="key"``); a ``team_id``
    naming no team is accepted for the proxy admin.
    """
    try:
        check_non_negative("max_budget", data.max_budget)
        check_non_negative("soft_budget", data.soft_budget)
        check_budget_duration(data.budget_duration)
        with emulator.state.lock:
            values = data.model_dump(exclude_unset=True, exclude_none=True)
            metadata: dict[str, Any] = dict(values.pop("metadata", None) or {})
            move_metadata_fields(emulator, values, metadata)
            _check_key_alias(emulator, data.key_alias)
            if data.key is not None and not data.key.startswith("sk-"):
                masked = f"{data.key[:4]}****{data.key[-4:]}" if len(data.key) > 8 else "****"
                raise HTTPDetail(
                    400,
                    {
                        "error": "Invalid key format. LiteLLM Virtual Key must start with "
                        f"'sk-'. Received: {masked}"
                    },
                )
            if data.key is not None and len(data.key) < MINIMUM_CUSTOM_KEY_LENGTH:
                raise HTTPDetail(
                    400,
                    {
                        "error": "Invalid key format. LiteLLM Virtual Key must be at least "
                        f"{MINIMUM_CUSTOM_KEY_LENGTH} characters long."
                    },
                )
            if data.key is not None and hash_token(data.key) in emulator.state.keys:
                raise HTTPDetail(500, {"error": "Internal Server Error."})
            try:
                if data.duration is not None:
                    duration_in_seconds(data.duration)
            except ValueError as exc:
                raise openai_error(500, str(exc)) from None
            extra = {
                k: v
                for k, v in values.items()
                if k in _KEY_COLUMNS
                and k not in ("key_alias", "user_id", "team_id", "models", "max_budget", "blocked")
            }
            if "budget_duration" in extra:
                extra.pop("budget_duration")
            raw, row = mint_key(
                emulator,
                raw_key=data.key,
                user_id=data.user_id,
                team_id=data.team_id,
                key_alias=data.key_alias,
                metadata=metadata,
                models=list(data.models or []),
                max_budget=data.max_budget,
                duration=data.duration,
                blocked=data.blocked,
                created_by=current_caller(request).user_id,
                extra=extra,
            )
            row.budget_duration = data.budget_duration
            row.tpm_limit = data.tpm_limit
            row.rpm_limit = data.rpm_limit
            response = GenerateKeyResponse.model_validate(
                {
                    **row.to_row(),
                    "token": raw,
                    "token_id": row.token,
                    "soft_budget": data.soft_budget,
                }
            )
            response.token = response.token_id
            return response
    except HTTPDetail as exc:
        raise as_openai(exc) from None


def _find_key_for_update(emulator: Emulator, data: UpdateKeyRequest) -> KeyRow:
    """``_get_and_validate_existing_key``: by key (raw or hash), else by a unique alias."""
    state = emulator.state
    if data.key is not None:
        row = state.keys.get(hash_token_if_needed(data.key))
        if row is None:
            raise proxy_error(404, "Key not found.", "not_found_error", "key")
        return row
    matches = [k for k in state.keys.values() if k.key_alias == data.key_alias]
    if not matches:
        raise proxy_error(
            404,
            f"Key not found. No key with key_alias='{data.key_alias}'.",
            "not_found_error",
            "key_alias",
        )
    if len(matches) > 1:
        raise proxy_error(
            400,
            f"Multiple keys share key_alias='{data.key_alias}', "
            "so it cannot be used as an identifier.",
            "bad_request_error",
            "key_alias",
        )
    return matches[0]


def _check_team_change(
    emulator: Emulator, row: KeyRow, team_id: str, new_user_id: str | None
) -> None:
    """``validate_key_team_change``: the key's user must be on the new team's roster (403)."""
    team = emulator.state.teams.get(team_id)
    if team is None:
        raise HTTPDetail(500, {"error": "Team object not found for team change validation"})
    user_id = new_user_id if new_user_id is not None else row.user_id
    if user_id is not None and user_id not in team.member_user_ids():
        raise HTTPDetail(
            403,
            f"User={user_id} is not a member of the team={team_id}. "
            "Check team members via `/team/info`.",
        )


@router.post("/key/update")
async def update_key_fn(data: UpdateKeyRequest, emulator: EmulatorDep) -> Any:
    """``key_management_endpoints.py::update_key_fn`` + ``prepare_key_update_data``.

    Only sent fields change. A sent ``metadata`` *replaces* the stored dict
    (``prepare_metadata_fields``; only ``service_account_id`` is carried over);
    an unsent one is kept. ``duration`` resets ``expires`` (``null``/``"-1"``:
    never). Answers ``{"key": <as sent, or the hash>, **row}``.
    """
    try:
        check_non_negative("max_budget", data.max_budget)
        check_budget_duration(data.budget_duration)
        with emulator.state.lock:
            row = _find_key_for_update(emulator, data)
            sent = data.model_dump(exclude_unset=True)
            sent.pop("key", None)
            if "key_alias" in sent:
                _check_key_alias(emulator, sent["key_alias"], exclude_token=row.token)
            if data.team_id is not None and data.team_id != row.team_id:
                _check_team_change(emulator, row, data.team_id, data.user_id)
            metadata: dict[str, Any]
            if "metadata" in sent:
                metadata = dict(sent.pop("metadata") or {})
                reserved = row.metadata.get("service_account_id")
                if reserved is not None:
                    if (
                        "service_account_id" in metadata
                        and metadata["service_account_id"] != reserved
                    ):
                        raise HTTPDetail(
                            400,
                            "service_account_id is immutable once set and cannot be changed "
                            "via update.",
                        )
                    metadata["service_account_id"] = reserved
            else:
                metadata = dict(row.metadata)
            for name in (*METADATA_FIELDS, *PREMIUM_METADATA_FIELDS):
                value = sent.pop(name, None)
                if value is not None:
                    metadata[name] = value
            if "duration" in sent:
                duration = sent.pop("duration")
                if duration is None or duration == "-1":
                    row.expires = None
                else:
                    row.expires = datetime.now(UTC) + timedelta(
                        seconds=duration_in_seconds(duration)
                    )
            row.metadata = metadata
            for name, value in sent.items():
                if name not in _KEY_COLUMNS or name in ("token", "key_name", "extra"):
                    continue
                if hasattr(row, name):
                    setattr(row, name, value)
                else:
                    row.extra[name] = value
            row.updated_at = utcnow()
            row.updated_by = ADMIN_USER_ID
            key_as_sent = data.key if data.key is not None else row.token
            return {"key": key_as_sent, **dump(key_model(row.to_row()))}
    except HTTPDetail as exc:
        raise as_openai(exc) from None


@router.post("/key/delete")
async def delete_key_fn(data: KeyRequest, request: Request, emulator: EmulatorDep) -> Any:
    """``key_management_endpoints.py::delete_key_fn`` (E1 errors).

    ``keys`` win over ``key_aliases``. None found: 404; some found: those are
    deleted (and archived) and the answer still lists every key sent.
    """
    with emulator.state.lock:
        state = emulator.state
        if data.keys:
            tokens = [hash_token_if_needed(k) for k in data.keys]
            sent: list[str] = data.keys
        else:
            aliases = data.key_aliases or []
            tokens = [k.token for k in state.keys.values() if k.key_alias in aliases]
            sent = aliases
        found = [t for t in tokens if t in state.keys]
        if not found:
            raise openai_error(404, {"error": "No keys found"})
        state.delete_keys(
            found, archive=True, deleted_by=ADMIN_USER_ID, changed_by=changed_by(request)
        )
        return {"deleted_keys": sent}


def key_status(row: KeyRow, now: datetime) -> str:
    """``_derive_key_status``: revoked (blocked) / expired / active."""
    if row.blocked is True:
        return "revoked"
    if row.expires is None:
        return "active"
    expires = row.expires if row.expires.tzinfo else row.expires.replace(tzinfo=UTC)
    return "expired" if expires < now else "active"


@router.get("/key/info")
async def info_key_fn(
    request: Request, emulator: EmulatorDep, key: str | None = Query(default=None)
) -> Any:
    """``key_management_endpoints.py::info_key_fn``; status: active/expired/revoked/deleted.

    Without ``key`` the proxy looks up the caller's own key
    (``user_api_key_dict.api_key``): for a virtual key its hash (so the answer's
    ``key`` is the hash, never the secret), for the master key the alias
    ``litellm_proxy_master_key``, which is never found (404 E3). Someone else's
    key needs a proxy admin or the key's own user (``_can_user_query_key_info``;
    team-admin access is not modelled): otherwise 403 E1.
    """
    caller = current_caller(request)
    lookup = key or caller.api_key
    token = hash_token_if_needed(lookup)
    with emulator.state.lock:
        live = emulator.state.keys.get(token)
        row = live if live is not None else getattr(
            emulator.state.find_deleted_key(token), "key", None
        )
        if (
            row is not None
            and not caller.is_proxy_admin
            and caller.api_key != token
            and not (row.user_id and row.user_id == caller.user_id)
        ):
            raise openai_error(
                403,
                "You are not allowed to access this key's info. "
                f"Your role={caller.user_role or 'internal_user'}",
            )
        if live is not None:
            info = dump(key_model(live.to_row()))
            info.pop("token", None)
            info["status"] = key_status(live, datetime.now(UTC))
            return {"key": lookup, "info": info}
        archived = emulator.state.find_deleted_key(token)
        if archived is None:
            raise proxy_error(404, "Key not found in database", "not_found_error", "key")
        info = dump(
            LiteLLM_DeletedVerificationToken.model_validate(
                {
                    **archived.key.to_row(),
                    "deleted_at": archived.deleted_at,
                    "deleted_by": archived.deleted_by,
                    "litellm_changed_by": archived.litellm_changed_by,
                }
            )
        )
        info.pop("token", None)
        info["status"] = "deleted"
        return {"key": lookup, "info": info}


@router.get("/key/list", response_model=KeyListResponseObject)
async def list_keys(
    emulator: EmulatorDep,
    page: int = Query(1, ge=1),
    size: int = Query(10, ge=1, le=100),
    user_id: str | None = Query(None),
    team_id: str | None = Query(None),
    key_alias: str | None = Query(None),
    key_hash: str | None = Query(None),
    return_full_object: bool = Query(False),
    status: str | None = Query(None),
    substring_matching: bool = Query(False),
) -> Any:
    """``key_management_endpoints.py::list_keys`` + ``list_key_helper``.

    Filters are exact unless ``substring_matching=true``; UI session keys are
    hidden; order is ``created_at`` desc then ``token`` desc; size > 100 is a 422.
    ``keys`` holds hashes, or ``UserAPIKeyAuth`` objects with ``return_full_object``.
    """
    if status is not None and status not in ("active", "expired", "revoked", "deleted"):
        raise openai_error(
            400,
            {
                "error": "Invalid status value. "
                "Supported: 'active', 'expired', 'revoked', 'deleted'."
            },
        )
    with emulator.state.lock:
        now = datetime.now(UTC)
        if status == "deleted":
            rows = [d.key for d in emulator.state.deleted_keys]
        else:
            rows = [k for k in emulator.state.keys.values() if k.team_id != UI_TEAM_ID]
            if status is not None:
                rows = [k for k in rows if key_status(k, now) == status]
        if user_id:
            if substring_matching:
                rows = [
                    k
                    for k in rows
                    if k.user_id is not None and user_id.lower() in k.user_id.lower()
                ]
            else:
                rows = [k for k in rows if k.user_id == user_id]
        if team_id:
            rows = [k for k in rows if k.team_id == team_id]
        if key_alias:
            if substring_matching:
                rows = [
                    k
                    for k in rows
                    if k.key_alias is not None and key_alias.lower() in k.key_alias.lower()
                ]
            else:
                rows = [k for k in rows if k.key_alias == key_alias]
        if key_hash:
            rows = [k for k in rows if k.token == key_hash]
        rows.sort(key=lambda k: (k.created_at, k.token), reverse=True)
        total = len(rows)
        window = rows[(page - 1) * size : page * size]
        keys: list[Any]
        if return_full_object:
            keys = [UserAPIKeyAuth(**dump(key_model(k.to_row()))) for k in window]
        else:
            keys = [k.token for k in window]
        return KeyListResponseObject(
            keys=keys, total_count=total, current_page=page, total_pages=-(-total // size)
        )


def _set_key_blocked(emulator: Emulator, key: str, blocked: bool) -> Any:
    """``block_key``/``unblock_key``: format check, then existence (E3 errors)."""
    valid = 3 <= len(key) <= 100 and (
        _VALID_KEY.match(key) is not None or _VALID_HASH.match(key) is not None
    )
    if not valid:
        raise proxy_error(400, "Invalid key format.", "bad_request_error", "key")
    token = hash_token(key) if key.startswith("sk-") else key
    with emulator.state.lock:
        row = emulator.state.keys.get(token)
        if row is None:
            raise proxy_error(404, "Key not found.", "not_found_error", "key")
        row.blocked = blocked
        row.updated_at = utcnow()
        return dump(key_model(row.to_row()))


@router.post("/key/block", response_model=LiteLLM_VerificationToken)
async def block_key(data: BlockKeyRequest, emulator: EmulatorDep) -> Any:
    """``key_management_endpoints.py::block_key``."""
    return _set_key_blocked(emulator, data.key, True)


@router.post("/key/unblock", response_model=LiteLLM_VerificationToken)
async def unblock_key(data: BlockKeyRequest, emulator: EmulatorDep) -> Any:
    """``key_management_endpoints.py::unblock_key``."""
    return _set_key_blocked(emulator, data.key, False)
