"""User endpoints.

Follows litellm 1.110.2 ``proxy/management_endpoints/internal_user_endpoints.py``.

``new_user``/``user_info`` answer errors in the E1 shape, ``user_update`` in the
E1 shape through ``proxy_exception_for`` (default status 400), and
``get_users``/``delete_user`` let ``HTTPException`` through as E2.
"""

from __future__ import annotations

import copy
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from litellm.proxy._types import (
    DeleteUserRequest,
    LiteLLM_TeamTable,
    Member,
    NewUserRequest,
    NewUserResponse,
    UpdateUserRequest,
    UserInfoResponse,
)
from litellm.types.proxy.management_endpoints.internal_user_endpoints import UserListResponse
from litellm.types.proxy.management_endpoints.user_requests import (
    LiteLLM_UserTableWithKeyCount,
    NewUserRequestTeam,
)

from devtools.litellm_emulator.core import (
    Emulator,
    HTTPDetail,
    as_openai,
    budget_reset_at,
    changed_by,
    check_budget_duration,
    current_caller,
    dump,
    get_emulator,
    key_model,
    require_caller,
    user_model,
)
from devtools.litellm_emulator.costs import UNIQUE_MESSAGE
from devtools.litellm_emulator.errors import detail_error, openai_error, proxy_error
from devtools.litellm_emulator.keys import mint_key
from devtools.litellm_emulator.state import ADMIN_USER_ID, UI_TEAM_ID, UserRow, utcnow
from devtools.litellm_emulator.teams import add_members, team_list_objects

router = APIRouter(dependencies=[Depends(require_caller)])

EmulatorDep = Annotated[Emulator, Depends(get_emulator)]

_KEY_METADATA_FIELDS = (
    "model_rpm_limit",
    "model_tpm_limit",
    "mcp_rpm_limit",
    "tag_rpm_limit",
    "guardrails",
    "policies",
    "prompts",
)
"""Fields ``generate_key_helper_fn`` folds into ``metadata`` (``metadata_json_with_limits``)."""

_USER_EXTRA_COLUMNS = (
    "team_id",
    "organization_id",
    "max_parallel_requests",
    "allowed_cache_controls",
)


def _join_team_quietly(
    emulator: Emulator, user_id: str, team_id: str, email: str | None, role: str
) -> None:
    """``_add_user_to_team``: a member_add whose failures are logged, not raised."""
    team = emulator.state.teams.get(team_id)
    if team is None:
        return
    if role == "admin" and not emulator.settings.licensed:
        return
    member = Member(user_id=user_id, user_email=email, role="admin" if role == "admin" else "user")
    if user_id in team.member_user_ids():
        return
    add_members(emulator, team, [member])


@router.post("/user/new", response_model=NewUserResponse)
async def new_user(data: NewUserRequest, emulator: EmulatorDep) -> Any:
    """``internal_user_endpoints.py::new_user`` (E1 errors).

    ``auto_create_key`` defaults to true: a personal key is minted and returned
    in ``key``; with false, ``key`` is ``""``. Failures to join ``team_id`` /
    ``teams`` are swallowed like the real ``_add_user_to_team``.
    """
    try:
        check_budget_duration(data.budget_duration)
        costs = emulator.costs
        if costs.active:
            # new_user checks the id, works, then inserts: a racing create of the
            # same id that inserted meanwhile makes this insert break the key.
            wanted = (data.user_id or "").strip()
            free = bool(wanted) and wanted not in emulator.state.users
            await costs.spend_items("POST", "/user/new", 1)
            if free and wanted in emulator.state.users:
                costs.races += 1
                raise openai_error(500, UNIQUE_MESSAGE.format(field="user_id"))
        with emulator.state.lock:
            state = emulator.state
            if data.user_id and data.user_id.strip() in state.users:
                raise HTTPDetail(
                    409, {"error": f"User with id {data.user_id.strip()} already exists"}
                )
            if data.user_email:
                wanted = data.user_email.strip().lower()
                clash = next(
                    (u for u in state.users.values() if (u.user_email or "").lower() == wanted),
                    None,
                )
                if clash is not None:
                    raise HTTPDetail(
                        409, {"error": f"User with email {clash.user_email} already exists"}
                    )
            user_id = data.user_id or str(uuid.uuid4())
            metadata: dict[str, Any] = dict(data.metadata or {})
            for name in _KEY_METADATA_FIELDS:
                value = getattr(data, name, None)
                if value is not None:
                    metadata[name] = value
            now = utcnow()
            user = UserRow(
                user_id=user_id,
                user_email=data.user_email,
                user_alias=data.user_alias,
                user_role=data.user_role.value if data.user_role is not None else None,
                metadata=metadata,
                models=list(data.models or []),
                max_budget=data.max_budget,
                budget_duration=data.budget_duration,
                budget_reset_at=budget_reset_at(data.budget_duration),
                tpm_limit=data.tpm_limit,
                rpm_limit=data.rpm_limit,
                sso_user_id=data.sso_user_id,
                spend=data.spend or 0.0,
                created_at=now,
                updated_at=now,
                extra={name: getattr(data, name, None) for name in _USER_EXTRA_COLUMNS},
            )
            state.users[user_id] = user
            response: dict[str, Any] = {}
            raw_key = ""
            if data.auto_create_key:
                raw_key, key = mint_key(
                    emulator,
                    raw_key=None,
                    user_id=user_id,
                    team_id=data.team_id,
                    key_alias=data.key_alias,
                    metadata=copy.deepcopy(metadata),
                    models=list(data.models or []),
                    max_budget=None,
                    duration=data.duration,
                    blocked=data.blocked,
                    created_by=None,
                )
                response.update(key.to_row())
            response.update(user.to_row())
            attached: list[str] | None = None
            if data.team_id is not None:
                _join_team_quietly(emulator, user_id, data.team_id, data.user_email, "user")
                attached = list(user.teams)
            elif data.teams is not None:
                for entry in data.teams:
                    membership = (
                        entry
                        if isinstance(entry, NewUserRequestTeam)
                        else NewUserRequestTeam(team_id=entry)
                    )
                    _join_team_quietly(
                        emulator, user_id, membership.team_id, data.user_email, membership.user_role
                    )
                attached = list(user.teams)
            body = {
                k: v
                for k, v in response.items()
                if k in NewUserResponse.model_fields and k not in ("token", "token_id")
            }
            body["key"] = raw_key
            body.pop("teams", None)  # only reported when team_id/teams were sent
            if attached is not None:
                body["teams"] = attached
            return NewUserResponse.model_validate(body)
    except HTTPDetail as exc:
        raise as_openai(exc) from None


def _user_info_keys(
    emulator: Emulator, keys: list[dict[str, Any]], roster_teams: list[Any]
) -> list[dict[str, Any]]:
    """``_process_keys_for_user_info``: adds ``team_alias`` (the string ``"None"`` if personal)."""
    aliases = {t.team_id: t.team_alias for t in roster_teams}
    out: list[dict[str, Any]] = []
    for key in keys:
        if key.get("team_id") == UI_TEAM_ID:
            continue
        if key.get("team_id") is not None:
            key["team_alias"] = aliases.get(key["team_id"])
        else:
            key["team_alias"] = "None"
        out.append(key)
    return out


@router.get("/user/info", response_model=UserInfoResponse)
async def user_info(
    request: Request, emulator: EmulatorDep, user_id: str | None = Query(default=None)
) -> Any:
    """``internal_user_endpoints.py::user_info`` (E1 errors).

    ``teams`` is the union of the teams whose roster names the user and the
    ids in ``user.teams``. Without ``user_id`` the master key gets the admin
    view: every team and key (``_get_user_info_for_proxy_admin``); any other
    caller without ``user_id`` gets their own. A non-admin asking for another
    user is refused by the route check (403, E3 ``auth_error``).
    """
    caller = current_caller(request)
    if not caller.is_proxy_admin:
        if user_id and user_id != caller.user_id:
            raise proxy_error(
                403,
                f"key not allowed to access this user's info. user_id={user_id}, "
                f"key's user_id={caller.user_id}",
                "auth_error",
                None,
            )
        user_id = caller.user_id or ""
    with emulator.state.lock:
        state = emulator.state
        if user_id is None:
            teams = sorted(
                (LiteLLM_TeamTable.model_validate(t.to_row()) for t in state.teams.values()),
                key=lambda t: t.team_alias or "",
            )
            keys = [
                dump(key_model(k.to_row())) for k in state.keys.values() if k.team_id != UI_TEAM_ID
            ]
            admin = state.users.get(ADMIN_USER_ID)
            return UserInfoResponse(
                user_id=ADMIN_USER_ID,
                user_info=dump(user_model(admin.to_row())) if admin is not None else None,
                keys=_user_info_keys(emulator, keys, teams),
                teams=teams,
            )
        user = state.users.get(user_id)
        if user is None:
            raise as_openai(HTTPDetail(404, f"User {user_id} not found"))
        roster_teams = team_list_objects(emulator, user_id)
        team_list: list[Any] = list(roster_teams)
        seen = {t.team_id for t in roster_teams}
        for tid in user.teams:
            team = state.teams.get(tid)
            if team is not None and tid not in seen:
                team_list.append(LiteLLM_TeamTable.model_validate(team.to_row()))
                seen.add(tid)
        team_list.sort(key=lambda t: t.team_alias or "")
        keys = [dump(key_model(k.to_row())) for k in state.keys.values() if k.user_id == user_id]
        return UserInfoResponse(
            user_id=user_id,
            user_info=dump(user_model(user.to_row())),
            keys=_user_info_keys(emulator, keys, roster_teams),
            teams=team_list,
        )


_USER_SORT_COLUMNS = (
    "user_id",
    "user_email",
    "created_at",
    "spend",
    "user_alias",
    "user_role",
    "max_budget",
    "updated_at",
    "sso_user_id",
)


@router.get("/user/list", response_model=UserListResponse)
async def get_users(
    request: Request,
    emulator: EmulatorDep,
    role: str | None = Query(default=None),
    user_ids: str | None = Query(default=None),
    sso_user_ids: str | None = Query(default=None),
    user_email: str | None = Query(default=None),
    search: str | None = Query(default=None),
    team: str | None = Query(default=None),
    page: int = Query(default=1, ge=1),
    page_size: int = Query(default=25, ge=1, le=100),
    sort_by: str | None = Query(default=None),
    sort_order: str = Query(default="asc"),
) -> Any:
    """``internal_user_endpoints.py::get_users`` (E2 errors).

    The trap: ``user_ids`` with a single value is a case-insensitive
    *substring* match (``alice`` also finds ``malice``); only a
    comma-separated list of two or more is an exact ``in`` match.
    Default order is ``created_at`` descending; page_size > 100 is a 422.
    Only proxy admins may list (``_scope_organization_ids_for_caller``: org
    admins are not modelled): anyone else gets 403 E2.
    """
    if not current_caller(request).is_proxy_admin:
        raise detail_error(
            403, {"error": "Only proxy admins and organization admins can list users."}
        )
    if sort_by is not None:
        if sort_by not in (*_USER_SORT_COLUMNS, "status", "key_count"):
            valid = ", ".join((*_USER_SORT_COLUMNS, "status", "key_count"))
            raise detail_error(400, {"error": f"Invalid sort column. Must be one of: {valid}"})
        if sort_order.lower() not in ("asc", "desc"):
            raise detail_error(400, {"error": "Invalid sort order. Must be 'asc' or 'desc'"})
    with emulator.state.lock:
        state = emulator.state
        rows = list(state.users.values())
        if role:
            rows = [u for u in rows if u.user_role == role]
        if user_ids:
            wanted = [uid.strip() for uid in user_ids.split(",") if uid.strip()]
            if len(wanted) == 1:
                rows = [u for u in rows if wanted[0].lower() in u.user_id.lower()]
            else:
                rows = [u for u in rows if u.user_id in wanted]
        if user_email is not None:
            rows = [u for u in rows if user_email.lower() in (u.user_email or "").lower()]
        if team is not None:
            rows = [u for u in rows if team in u.teams]
        if sso_user_ids is not None:
            sso = [s.strip() for s in sso_user_ids.split(",") if s.strip()]
            rows = [u for u in rows if u.sso_user_id in sso]
        if search:
            rows = [
                u
                for u in rows
                if search.lower() in u.user_id.lower()
                or search.lower() in (u.user_email or "").lower()
            ]

        def key_count(uid: str) -> int:
            return sum(
                1 for k in state.keys.values() if k.user_id == uid and k.team_id != UI_TEAM_ID
            )

        if sort_by in _USER_SORT_COLUMNS:
            column = sort_by
            present = [u for u in rows if getattr(u, column) is not None]
            missing = [u for u in rows if getattr(u, column) is None]
            present.sort(key=lambda u: getattr(u, column), reverse=sort_order.lower() == "desc")
            rows = present + missing
        elif sort_by == "key_count":
            rows.sort(key=lambda u: key_count(u.user_id), reverse=sort_order.lower() == "desc")
        else:
            rows.sort(key=lambda u: u.created_at, reverse=True)
        total = len(rows)
        window = rows[(page - 1) * page_size : page * page_size]
        users = [
            LiteLLM_UserTableWithKeyCount.model_validate(
                {**u.to_row(), "key_count": key_count(u.user_id)}
            )
            for u in window
        ]
        return {
            "users": users,
            "total": total,
            "page": page,
            "page_size": page_size,
            "total_pages": -(-total // page_size),
        }


def _non_default_values(data: UpdateUserRequest) -> dict[str, Any]:
    """``_update_internal_user_params``: unset, None, ``[]`` and ``{}`` values are dropped.

    So ``metadata: {}`` does *not* clear a user's metadata; only a non-empty
    dict replaces it. Likewise ``user_email: null`` keeps the address and
    ``user_email: ""`` is what empties it (stored as ``""``); no uniqueness check
    runs here (``_update_single_user_helper`` calls none, and the column is not
    unique in ``schema.prisma``).
    """
    sent = data.model_dump(exclude_unset=True)
    fields_set = data.model_fields_set
    values: dict[str, Any] = {}
    for name, value in sent.items():
        if name in ("max_budget", "budget_duration", "tpm_limit", "rpm_limit"):
            if name in fields_set:
                values[name] = value
        elif value is not None and value not in ([], {}):
            values[name] = value
    if "budget_duration" in values:
        check_budget_duration(values["budget_duration"])
        values["budget_reset_at"] = budget_reset_at(values["budget_duration"])
    values.pop("password", None)
    return values


def _write_user(user: UserRow, values: dict[str, Any]) -> None:
    for name, value in values.items():
        if name in ("user_id", "extra"):
            continue
        if name == "user_role" and value is not None:
            value = getattr(value, "value", value)
        if hasattr(user, name):
            setattr(user, name, value)
        else:
            user.extra[name] = value
    user.updated_at = utcnow()


@router.post("/user/update")
async def user_update(data: UpdateUserRequest, emulator: EmulatorDep) -> Any:
    """``internal_user_endpoints.py::_update_single_user_helper`` (E1 errors, default 400).

    ``metadata`` replaces the stored dict; an unknown user_id is created
    (upsert). Answers ``{"user_id", "data": row}``; when addressed only by an
    unknown email the new row is returned bare, as the real insert path does.
    """
    try:
        with emulator.state.lock:
            state = emulator.state
            values = _non_default_values(data)
            existing: UserRow | None = None
            if data.user_id:
                existing = state.users.get(data.user_id)
            elif data.user_email:
                existing = next(
                    (u for u in state.users.values() if u.user_email == data.user_email), None
                )
            if "metadata" not in values:
                values["metadata"] = (
                    copy.deepcopy(existing.metadata) if existing is not None else {}
                )
            if data.user_id:
                user = existing
                if user is None:
                    user = UserRow(user_id=data.user_id)
                    state.users[data.user_id] = user
                _write_user(user, values)
                return {"user_id": user.user_id, "data": dump(user_model(user.to_row()))}
            if existing is not None:
                _write_user(existing, values)
                return {"user_id": existing.user_id, "data": dump(user_model(existing.to_row()))}
            user = UserRow(user_id=str(uuid.uuid4()), user_email=data.user_email)
            state.users[user.user_id] = user
            _write_user(user, values)
            return dump(user_model(user.to_row()))
    except HTTPDetail as exc:
        raise as_openai(exc) from None


@router.post("/user/delete")
async def delete_user(data: DeleteUserRequest, request: Request, emulator: EmulatorDep) -> Any:
    """``internal_user_endpoints.py::delete_user`` (E2 errors); answers the number of users deleted.

    Every key of the users is deleted *without* going to the deleted-key
    archive (the real code calls ``delete_many`` directly), then the users are
    taken off every team in ``user.teams`` or a membership row, and deleted.
    """
    with emulator.state.lock:
        state = emulator.state
        for uid in data.user_ids:
            if uid not in state.users:
                raise detail_error(404, {"error": f"User not found, passed user_id={uid}"})
        ids = set(data.user_ids)
        tokens = [k.token for k in state.keys.values() if k.user_id in ids]
        state.delete_keys(
            tokens, archive=False, deleted_by=ADMIN_USER_ID, changed_by=changed_by(request)
        )
        deleted = 0
        for uid in dict.fromkeys(data.user_ids):
            user = state.users.get(uid)
            if user is None:
                continue
            team_ids = set(user.teams) | {tid for (u, tid) in state.memberships if u == uid}
            for tid in team_ids:
                team = state.teams.get(tid)
                if team is not None:
                    team.members_with_roles = [
                        m for m in team.members_with_roles if m.get("user_id") != uid
                    ]
                    team.updated_at = utcnow()
                state.unlink_user_from_team(uid, tid)
            del state.users[uid]
            deleted += 1
        return jsonable_encoder(deleted)
