"""Team endpoints, following litellm 1.110.2 ``proxy/management_endpoints/team_endpoints.py``.

Each handler names the real function it follows. Error shapes matter: the real
``new_team``/``update_team``/``patch_team``/``team_info`` convert errors with
``handle_exception_on_proxy`` (E1), while ``team_member_add``,
``team_member_delete``, ``team_member_update``, ``block_team``, ``delete_team``,
``list_team`` and ``list_team_v2`` let ``HTTPException`` reach FastAPI (E2).
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from litellm.proxy._types import (
    BlockTeamRequest,
    DeleteTeamRequest,
    LiteLLM_TeamMembership,
    LiteLLM_TeamTable,
    LiteLLM_UserTable,
    Member,
    NewTeamRequest,
    PatchTeamRequest,
    TeamAddMemberResponse,
    TeamInfoMembership,
    TeamInfoResponseObjectTeamTable,
    TeamListResponseObject,
    TeamMemberAddRequest,
    TeamMemberDeleteRequest,
    TeamMemberUpdateRequest,
    TeamMemberUpdateResponse,
    UpdateTeamRequest,
)
from litellm.types.proxy.management_endpoints.team_endpoints import (
    TeamListCallerMembership,
    TeamListItem,
    TeamListResponse,
)

from devtools.litellm_emulator.core import (
    NOT_PREMIUM,
    Emulator,
    HTTPDetail,
    as_openai,
    budget_reset_at,
    changed_by,
    check_budget_duration,
    check_non_negative,
    current_caller,
    dump,
    get_emulator,
    key_model,
    move_metadata_fields,
    require_caller,
    team_model,
)
from devtools.litellm_emulator.costs import UNIQUE_MESSAGE
from devtools.litellm_emulator.errors import detail_error, openai_error, proxy_error
from devtools.litellm_emulator.state import (
    ADMIN_USER_ID,
    UI_TEAM_ID,
    DeletedTeamRow,
    MembershipRow,
    TeamRow,
    UserRow,
    utcnow,
)

router = APIRouter(dependencies=[Depends(require_caller)])

EmulatorDep = Annotated[Emulator, Depends(get_emulator)]

TEAM_COLUMNS = frozenset(LiteLLM_TeamTable.model_fields) - {"members_with_roles", "team_id"}
"""Request fields that are team-table columns; the rest (budgets tables, aliases) are not stored."""

SYSTEM_MANAGED_METADATA_KEYS = ("team_member_budget_id",)
"""``TeamMemberBudgetHandler.SYSTEM_MANAGED_METADATA_KEYS``: survive a metadata replace."""

PREMIUM_ADMIN_MESSAGE = (
    "Assigning team admins is a premium feature. You must be a LiteLLM Enterprise user to use this "
    "feature. If you have a license please set `LITELLM_LICENSE` in your env. "
    "Get a 7 day trial key "
    "here: https://www.litellm.ai/#trial. Pricing: https://www.litellm.ai/#pricing"
)
"""The literal string ``team_member_update`` raises (it differs from member_add's)."""


def _member(entry: dict[str, Any]) -> Member:
    return Member.model_validate(entry)


def _members_repr(team: TeamRow) -> str:
    """``str(existing_team_row.members_with_roles)``: a list of ``Member(...)`` reprs."""
    return repr([_member(m) for m in team.members_with_roles])


def _in_roster(member: Member, team: TeamRow) -> bool:
    """``_member_already_in_team``: same user_id, or same user_email."""
    return any(
        (member.user_id is not None and existing.get("user_id") == member.user_id)
        or (member.user_email is not None and existing.get("user_email") == member.user_email)
        for existing in team.members_with_roles
    )


def _users_with_email(emulator: Emulator, email: str, *, insensitive: bool) -> list[UserRow]:
    if insensitive:
        return [
            u
            for u in emulator.state.users.values()
            if (u.user_email or "").lower() == email.lower()
        ]
    return [u for u in emulator.state.users.values() if u.user_email == email]


def add_members(
    emulator: Emulator, team: TeamRow, members: list[Member]
) -> tuple[list[UserRow], list[MembershipRow]]:
    """``_add_team_members_to_team``: upsert users, link them, then extend the roster.

    Follows ``management_helpers/utils.py::add_new_member``: a member named by
    user_id is upserted as an ``internal_user`` (without copying the member's
    email onto a new row); a member named only by email joins the one user with
    that email or a new user with a random uuid.
    """
    state = emulator.state
    updated_users: list[UserRow] = []
    memberships: list[MembershipRow] = []
    for member in members:
        if _in_roster(member, team):
            continue
        user: UserRow | None = None
        if member.user_id is not None:
            user, _ = state.ensure_user(member.user_id)
        elif member.user_email is not None:
            found = _users_with_email(emulator, member.user_email, insensitive=False)
            if len(found) > 1:
                raise detail_error(
                    500,
                    {
                        "error": f"Unable to add user - {member}, to team - {team.team_id}, "
                        "for reason - "
                        "400: {'error': \"Multiple users with this email found in db. Please use "
                        "'user_id' instead.\"}"
                    },
                )
            if found:
                user = found[0]
            else:
                user, _ = state.ensure_user(str(uuid.uuid4()), user_email=member.user_email)
        if user is None:
            continue
        memberships.append(state.link_user_to_team(user.user_id, team.team_id))
        updated_users.append(user)
    for member in members:
        resolved_id = member.user_id or next(
            (
                u.user_id
                for u in updated_users
                if member.user_email is not None and u.user_email == member.user_email
            ),
            None,
        )
        resolved_email = member.user_email or next(
            (
                u.user_email
                for u in updated_users
                if resolved_id is not None and u.user_id == resolved_id
            ),
            None,
        )
        resolved = member.model_copy(update={"user_id": resolved_id, "user_email": resolved_email})
        if not _in_roster(resolved, team):
            team.members_with_roles.append(resolved.model_dump())
    team.updated_at = utcnow()
    return updated_users, memberships


def _team_response(team: TeamRow) -> dict[str, Any]:
    return dump(team_model(team.to_row()))


def _memberships_of(
    emulator: Emulator, team_id: str, user_id: str | None = None
) -> list[LiteLLM_TeamMembership]:
    return [
        LiteLLM_TeamMembership(
            user_id=m.user_id, team_id=m.team_id, spend=m.spend, budget_id=m.budget_id
        )
        for m in emulator.state.memberships.values()
        if m.team_id == team_id and (user_id is None or m.user_id == user_id)
    ]


def _team_keys(emulator: Emulator, team_id: str) -> list[dict[str, Any]]:
    return [
        dump(key_model(k.to_row())) for k in emulator.state.keys.values() if k.team_id == team_id
    ]


def require_team_admin(request: Request, team: TeamRow, route: str) -> None:
    """``get_team_access().allows(..., TEAM_OR_ORG_ADMIN)``: proxy admin or team admin.

    Refusal is a 403 E2 ``{"detail": {"error": "Call not allowed. ..."}}`` as in
    ``_validate_team_member_add_permissions`` and ``team_member_delete``.
    Organisations are not modelled, so there are no org admins.
    """
    caller = current_caller(request)
    if caller.is_proxy_admin:
        return
    if any(
        m.get("user_id") == caller.user_id and m.get("role") == "admin"
        for m in team.members_with_roles
    ):
        return
    raise detail_error(
        403,
        {
            "error": "Call not allowed. User not proxy admin OR team admin. "
            f"route={route}, team_id={team.team_id}"
        },
    )


def own_teams_only(request: Request, user_id: str | None) -> str | None:
    """``_authorize_and_filter_teams``: a non-admin may list only their own teams.

    Another ``user_id`` is a 401 E2; no ``user_id`` means the caller's own.
    """
    caller = current_caller(request)
    if caller.is_proxy_admin:
        return user_id
    if user_id is not None and user_id != caller.user_id:
        raise detail_error(
            401,
            {
                "error": "Only admin users can query all teams/other teams. "
                f"Your user role={caller.user_role or 'internal_user'}"
            },
        )
    return caller.user_id or ""


# -- /team/new -----------------------------------------------------------------


@router.post("/team/new", response_model=LiteLLM_TeamTable)
async def new_team(
    data: NewTeamRequest, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """``team_endpoints.py::new_team`` (E1 errors).

    The caller is appended as team ``admin`` (``_should_auto_add_team_creator``):
    always for a non-admin caller with a user, and for a proxy admin (the master
    key's ``default_user_id``, or a proxy-admin key's own user) unless
    ``disable_auto_add_proxy_admin_to_teams``.
    """
    caller = current_caller(request)
    try:
        check_non_negative("max_budget", data.max_budget)
        check_non_negative("team_member_budget", data.team_member_budget)
        check_non_negative("soft_budget", data.soft_budget)
        check_budget_duration(data.budget_duration)
        check_budget_duration(data.team_member_budget_duration)
        if (
            data.soft_budget is not None
            and data.max_budget is not None
            and data.soft_budget >= data.max_budget
        ):
            raise HTTPDetail(
                400,
                {
                    "error": f"soft_budget ({data.soft_budget}) must be strictly lower than "
                    "max_budget "
                    f"({data.max_budget})"
                },
            )
        costs = emulator.costs
        if costs.active:
            # new_team checks the id, works, then inserts in a transaction: a create
            # of the same id that inserted meanwhile makes this insert break the key.
            free = data.team_id is not None and data.team_id not in emulator.state.teams
            await costs.spend_items("POST", "/team/new", 1)
            if free and data.team_id in emulator.state.teams:
                costs.races += 1
                raise openai_error(500, UNIQUE_MESSAGE.format(field="team_id"))
        with emulator.state.lock:
            if data.team_id is None:
                data.team_id = str(uuid.uuid4())
            elif data.team_id == UI_TEAM_ID:
                raise HTTPDetail(
                    400,
                    {
                        "error": f"team_id '{UI_TEAM_ID}' is reserved for LiteLLM UI dashboard "
                        "sessions and "
                        "cannot be used for a real team. Please use a different team id."
                    },
                )
            elif data.team_id in emulator.state.teams:
                raise HTTPDetail(
                    400,
                    {
                        "error": f"Team id = {data.team_id} already exists. "
                        "Please use a different team id."
                    },
                )
            if data.organization_id is not None:
                raise HTTPDetail(
                    400, f"Organization not found for organization_id={data.organization_id}"
                )
            members = list(data.members_with_roles)
            creator = caller.user_id
            auto_add = creator is not None and (
                not caller.is_proxy_admin or emulator.settings.auto_add_proxy_admin
            )
            if auto_add and not any(m.user_id == creator for m in members):
                members.append(Member(role="admin", user_id=creator))
            values = data.model_dump(exclude={"members_with_roles", "team_id"})
            metadata: dict[str, Any] = dict(values.pop("metadata", None) or {})
            metadata.pop("team_member_budget_id", None)
            move_metadata_fields(emulator, values, metadata)
            columns = {k: v for k, v in values.items() if k in TEAM_COLUMNS}
            now = utcnow()
            team = TeamRow(
                team_id=data.team_id,
                team_alias=columns.pop("team_alias", None),
                organization_id=columns.pop("organization_id", None),
                metadata=metadata,
                models=list(columns.pop("models", None) or []),
                max_budget=columns.pop("max_budget", None),
                soft_budget=columns.pop("soft_budget", None),
                budget_duration=columns.pop("budget_duration", None),
                budget_reset_at=budget_reset_at(data.budget_duration),
                tpm_limit=columns.pop("tpm_limit", None),
                rpm_limit=columns.pop("rpm_limit", None),
                blocked=bool(columns.pop("blocked", False)),
                created_at=now,
                updated_at=now,
                extra={k: v for k, v in columns.items() if v is not None},
            )
            emulator.state.teams[team.team_id] = team
            add_members(emulator, team, members)
            return _team_response(team)
    except HTTPDetail as exc:
        raise as_openai(exc) from None


# -- /team/update and PATCH /team/{team_id} --------------------------------------


def _apply_team_update(emulator: Emulator, data: UpdateTeamRequest) -> TeamRow:
    """``update_team``: only sent fields change; ``metadata`` replaces the stored dict."""
    check_non_negative("max_budget", data.max_budget)
    check_non_negative("team_member_budget", data.team_member_budget)
    check_non_negative("soft_budget", data.soft_budget)
    check_budget_duration(data.budget_duration)
    check_budget_duration(data.team_member_budget_duration)
    team = emulator.state.teams.get(data.team_id)
    if team is None:
        raise HTTPDetail(404, {"error": f"Team not found, passed team_id={data.team_id}"})
    if data.soft_budget is not None:
        ceiling = data.max_budget if data.max_budget is not None else team.max_budget
        if ceiling is not None and data.soft_budget >= ceiling:
            raise HTTPDetail(
                400,
                {
                    "error": f"soft_budget ({data.soft_budget}) must be strictly lower than "
                    f"max_budget ({ceiling})"
                },
            )
    if data.max_budget is not None:
        floor = data.soft_budget if data.soft_budget is not None else team.soft_budget
        if floor is not None and data.max_budget <= floor:
            raise HTTPDetail(
                400,
                {
                    "error": f"max_budget ({data.max_budget}) must be strictly greater than "
                    f"soft_budget ({floor})"
                },
            )
    if data.organization_id:
        raise HTTPDetail(400, f"Organization not found for organization_id={data.organization_id}")
    updated = data.model_dump(exclude_unset=True, exclude={"team_id"})
    if "organization_id" in updated and updated["organization_id"] == "":
        updated["organization_id"] = None
    if "metadata" in updated:
        sent = dict(updated.pop("metadata") or {})
        for key in SYSTEM_MANAGED_METADATA_KEYS:
            sent.pop(key, None)
            if key in team.metadata:
                sent[key] = team.metadata[key]
        metadata = sent
    else:
        metadata = copy.deepcopy(team.metadata)
    move_metadata_fields(emulator, updated, metadata)
    team.metadata = metadata
    for name, value in updated.items():
        if name not in TEAM_COLUMNS:
            continue
        if name == "model_max_budget" and value is None:
            value = {}
        if hasattr(team, name) and name != "extra":
            setattr(team, name, value)
        else:
            team.extra[name] = value
    if "budget_duration" in updated:
        team.budget_reset_at = budget_reset_at(data.budget_duration)
    team.updated_at = utcnow()
    return team


@router.post("/team/update")
async def update_team(
    data: UpdateTeamRequest, request: Request, emulator: EmulatorDep
) -> dict[str, Any]:
    """``team_endpoints.py::update_team`` (E1 errors): answers ``{"team_id", "data": row}``.

    A caller who is neither proxy admin nor team admin gets 403 "You do not have
    access to this team" (``management/teams/authz.py::team_access_denied``), for
    an unknown team too. Which fields a team admin may edit is not modelled.
    """
    try:
        with emulator.state.lock:
            caller = current_caller(request)
            if not caller.is_proxy_admin:
                existing = emulator.state.teams.get(data.team_id)
                if existing is None or not any(
                    m.get("user_id") == caller.user_id and m.get("role") == "admin"
                    for m in existing.members_with_roles
                ):
                    raise HTTPDetail(403, "You do not have access to this team")
            team = _apply_team_update(emulator, data)
            return {"team_id": team.team_id, "data": _team_response(team)}
    except HTTPDetail as exc:
        raise as_openai(exc) from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``apply_json_merge_patch``): ``null`` deletes a key."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@router.patch("/team/{team_id}", response_model=LiteLLM_TeamTable)
async def patch_team(team_id: str, data: PatchTeamRequest, emulator: EmulatorDep) -> dict[str, Any]:
    """``team_endpoints.py::patch_team`` (E1 errors): metadata merged, everything else as update."""
    try:
        if data.team_id is not None and data.team_id != team_id:
            raise HTTPDetail(
                400,
                {
                    "error": f"team_id in body ({data.team_id}) does not match "
                    f"team_id in path ({team_id})"
                },
            )
        fields = data.model_dump(exclude_unset=True, exclude={"team_id"})
        with emulator.state.lock:
            if "metadata" in fields:
                existing = emulator.state.teams.get(team_id)
                if existing is None:
                    raise HTTPDetail(404, {"error": f"Team not found, passed team_id={team_id}"})
                fields["metadata"] = merge_patch(existing.metadata, fields["metadata"])
            team = _apply_team_update(
                emulator, UpdateTeamRequest.model_validate({"team_id": team_id, **fields})
            )
            return _team_response(team)
    except HTTPDetail as exc:
        raise as_openai(exc) from None


# -- /team/info, /team/list, /v2/team/list --------------------------------------


@router.get("/team/info")
async def team_info(emulator: EmulatorDep, team_id: str | None = Query(default=None)) -> Any:
    """``team_endpoints.py::team_info`` (E1 errors; note the ``message`` key in the detail).

    Real quirk kept: the loop meant to drop ``token`` from the keys pops it from
    a copy, so key rows still carry their hash.
    """
    if team_id is None:
        raise as_openai(HTTPDetail(422, {"message": "Malformed request. No team id passed in."}))
    with emulator.state.lock:
        team = emulator.state.teams.get(team_id)
        if team is None:
            raise as_openai(
                HTTPDetail(404, {"message": f"Team not found, passed team id: {team_id}."})
            )
        aliases = {u.user_id: u.user_alias for u in emulator.state.users.values()}
        members = [
            {**m, "user_alias": aliases.get(m.get("user_id") or "")}
            for m in team.members_with_roles
        ]
        team_info_obj = TeamInfoResponseObjectTeamTable.model_validate(
            {**team.to_row(), "members_with_roles": members}
        )
        memberships = [
            TeamInfoMembership.model_validate({**tm.model_dump(), "budget_source": "none"})
            for tm in _memberships_of(emulator, team_id)
        ]
        return jsonable_encoder(
            {
                "team_id": team_id,
                "team_info": team_info_obj,
                "keys": _team_keys(emulator, team_id),
                "team_memberships": memberships,
            }
        )


def team_list_objects(emulator: Emulator, user_id: str | None) -> list[TeamListResponseObject]:
    """``list_team`` rows: roster-filtered on user_id, with memberships and keys, by alias."""
    rows: list[TeamListResponseObject] = []
    for team in emulator.state.teams.values():
        if user_id and user_id not in team.member_user_ids():
            continue
        rows.append(
            TeamListResponseObject.model_validate(
                {
                    **team.to_row(),
                    "team_memberships": _memberships_of(emulator, team.team_id, user_id),
                    "keys": _team_keys(emulator, team.team_id),
                }
            )
        )
    rows.sort(key=lambda t: t.team_alias or "")
    return rows


@router.get("/team/list")
async def list_team(
    request: Request,
    emulator: EmulatorDep,
    user_id: str | None = Query(default=None),
    organization_id: str | None = None,
) -> Any:
    """``team_endpoints.py::list_team``: every team, unpaginated (E2 errors)."""
    user_id = own_teams_only(request, user_id)
    with emulator.state.lock:
        rows = team_list_objects(emulator, user_id)
    if organization_id is not None:
        if organization_id == "default_organization":
            rows = [t for t in rows if t.organization_id is None]
        else:
            rows = [t for t in rows if t.organization_id == organization_id]
    return jsonable_encoder(rows)


_V2_SORT_COLUMNS = (
    "team_id",
    "team_alias",
    "created_at",
    "spend",
    "max_budget",
    "tpm_limit",
    "rpm_limit",
    "updated_at",
)


@router.get("/v2/team/list", response_model=TeamListResponse)
async def list_team_v2(
    request: Request,
    emulator: EmulatorDep,
    user_id: str | None = Query(default=None),
    organization_id: str | None = Query(default=None),
    team_id: str | None = Query(default=None),
    team_alias: str | None = Query(default=None),
    search: str | None = Query(default=None),
    search_team_id_match: Literal["exact", "prefix"] = Query(default="exact"),
    page: int = Query(default=1, ge=1),
    page_size: int = Query(default=10, ge=1, le=100),
    sort_by: str | None = Query(default=None),
    sort_order: str = Query(default="asc"),
    status: str | None = Query(default=None),
) -> TeamListResponse:
    """``team_endpoints.py::list_team_v2`` (E2 errors; page_size > 100 is a 422, not a clamp).

    Rows are ``TeamListItem``: the team columns plus ``members_count``,
    ``keys_count`` and ``caller_membership`` (the master key's own membership).
    The ``user_id`` filter reads ``user.teams``, not the roster.
    """
    if status is not None and status != "deleted":
        raise detail_error(
            400, {"error": "Invalid status value. Currently only 'deleted' is supported."}
        )
    user_id = own_teams_only(request, user_id)
    with emulator.state.lock:
        state = emulator.state
        if status == "deleted":
            candidates = [d.team for d in state.deleted_teams]
        else:
            candidates = list(state.teams.values())
        if user_id:
            user = state.users.get(user_id)
            if user is None:
                raise detail_error(404, {"error": f"User not found, passed user_id={user_id}"})
            if status != "deleted":
                if not user.teams:
                    return TeamListResponse(
                        teams=[], total=0, page=page, page_size=page_size, total_pages=0
                    )
                if team_id is not None and team_id not in user.teams:
                    raise detail_error(404, {"error": f"User is not a member of team_id={team_id}"})
                candidates = [t for t in candidates if t.team_id in user.teams]
            else:
                candidates = [t for t in candidates if user_id in t.member_user_ids()]
        if team_id:
            candidates = [t for t in candidates if t.team_id == team_id]
        if team_alias:
            candidates = [
                t for t in candidates if team_alias.lower() in (t.team_alias or "").lower()
            ]
        if search:
            candidates = [
                t
                for t in candidates
                if (
                    t.team_id.startswith(search)
                    if search_team_id_match == "prefix"
                    else t.team_id == search
                )
                or search.lower() in (t.team_alias or "").lower()
            ]
        if organization_id:
            candidates = [t for t in candidates if t.organization_id == organization_id]
        descending = str(sort_order).lower() == "desc"
        if sort_by in _V2_SORT_COLUMNS:
            column = sort_by
            present = [t for t in candidates if getattr(t, column) is not None]
            missing = [t for t in candidates if getattr(t, column) is None]
            present.sort(key=lambda t: t.team_id)
            present.sort(key=lambda t: getattr(t, column), reverse=descending)
            candidates = missing + present if descending else present + missing
        else:
            candidates.sort(key=lambda t: t.created_at, reverse=True)
        total = len(candidates)
        window = candidates[(page - 1) * page_size : page * page_size]
        if status == "deleted":
            from litellm.proxy._types import LiteLLM_DeletedTeamTable

            deleted_at = {id(d.team): d for d in state.deleted_teams}
            teams: list[Any] = [
                LiteLLM_DeletedTeamTable.model_validate(
                    {
                        **t.to_row(),
                        "deleted_at": deleted_at[id(t)].deleted_at,
                        "deleted_by": deleted_at[id(t)].deleted_by,
                    }
                )
                for t in window
            ]
        else:
            teams = []
            for t in window:
                in_team = (
                    ADMIN_USER_ID in t.member_user_ids()
                    or (ADMIN_USER_ID, t.team_id) in state.memberships
                )
                membership = state.memberships.get((ADMIN_USER_ID, t.team_id))
                teams.append(
                    TeamListItem.model_validate(
                        {
                            **t.to_row(),
                            "members_count": len(t.members_with_roles),
                            "keys_count": sum(
                                1 for k in state.keys.values() if k.team_id == t.team_id
                            ),
                            "caller_membership": TeamListCallerMembership(
                                spend=membership.spend if membership is not None else 0.0
                            )
                            if in_team
                            else None,
                        }
                    )
                )
        return TeamListResponse(
            teams=teams,
            total=total,
            page=page,
            page_size=page_size,
            total_pages=-(-total // page_size),
        )


# -- membership endpoints ---------------------------------------------------------


@router.post("/team/member_add", response_model=TeamAddMemberResponse)
async def team_member_add(
    data: TeamMemberAddRequest, request: Request, emulator: EmulatorDep
) -> Any:
    """``team_endpoints.py::team_member_add`` (E2 errors; E3 for duplicates).

    Order of checks is the real one: the licence check on role ``admin`` runs
    before the team is even looked up.
    """
    members = data.member if isinstance(data.member, list) else [data.member]
    if not emulator.settings.licensed:
        if isinstance(data.member, Member) and data.member.role == "admin":
            raise detail_error(
                400, {"error": f"Assigning team admins is a premium feature. {NOT_PREMIUM}"}
            )
        for m in members if isinstance(data.member, list) else []:
            if m.role == "admin":
                raise detail_error(
                    400,
                    {
                        "error": "Assigning team admins is a premium feature. "
                        f"Got={m}. {NOT_PREMIUM}. "
                    },
                )
    try:
        check_budget_duration(data.budget_duration)
    except HTTPDetail as exc:
        raise detail_error(exc.status, exc.detail) from None
    def apply() -> Any:
        with emulator.state.lock:
            state = emulator.state
            team = state.teams.get(data.team_id)
            if team is None:
                raise detail_error(
                    404,
                    {
                        "error": f"Team doesn't exist in db. Team={data.team_id}. "
                        "Create team via `/team/new` call."
                    },
                )
            require_team_admin(request, team, "/team/member_add")
            duplicates = [
                m for m in members if m.user_id is not None and m.user_id in team.member_user_ids()
            ]
            duplicates += [
                m
                for m in members
                if m.user_email is not None
                and any(e.get("user_email") == m.user_email for e in team.members_with_roles)
            ]
            if isinstance(data.member, list) and len(duplicates) == len(data.member):
                raise proxy_error(
                    400,
                    f"All users are already in team. Existing members={_members_repr(team)}",
                    "team_member_already_in_team",
                    "member",
                )
            if isinstance(data.member, Member) and len(duplicates) == 1:
                raise proxy_error(
                    400,
                    f"User already in team. Member: user_id={data.member.user_id}, "
                    f"user_email={data.member.user_email}. "
                    f"Existing members={_members_repr(team)}",
                    "team_member_already_in_team",
                    "member",
                )
            for m in members:
                _validate_and_populate_member(emulator, m)
            updated_users, memberships = add_members(emulator, team, members)
            response = TeamAddMemberResponse.model_validate(
                {
                    **team.to_row(),
                    "updated_users": [
                        LiteLLM_UserTable.model_validate(u.to_row()) for u in updated_users
                    ],
                    "updated_team_memberships": [
                        LiteLLM_TeamMembership(
                            user_id=m.user_id, team_id=m.team_id, spend=m.spend,
                            budget_id=m.budget_id,
                        )
                        for m in memberships
                    ],
                }
            )
            return response

    costs = emulator.costs
    if not costs.active:
        return apply()
    # _add_team_members_to_team: the transaction opens, then waits for the team's
    # advisory lock, then writes each member; the limit counts from the opening.
    # The first member write after the limit raises (Prisma's P2028), so an
    # expired batch stops spending there, and concurrent batches share the
    # proxy's CPU member by member (each member's writes are awaits on the real
    # proxy). Nothing of an expired batch is applied.
    started = time.monotonic()
    async with costs.team_lock(data.team_id):
        for member in [*members, None]:  # None: the commit
            expired = costs.tx_expired(started)
            if expired is not None:
                failed = member if member is not None else members[-1]
                raise detail_error(500, {"error": f"Unable to add user - {failed}, to team - "
                                                  f"{data.team_id}, for reason - {expired}"})
            if member is not None:
                await costs.spend_items("POST", "/team/member_add", 1)
        return apply()


def _validate_and_populate_member(emulator: Emulator, member: Member) -> None:
    """``_validate_and_populate_member_user_info``: reconcile user_id and user_email."""
    if member.user_email is not None and member.user_id is not None:
        by_email = _users_with_email(emulator, member.user_email, insensitive=False)
        if not by_email:
            return
        if len(by_email) > 1:
            raise detail_error(
                400,
                {
                    "error": f"Multiple users found with email '{member.user_email}'. "
                    "Please use 'user_id' instead."
                },
            )
        if by_email[0].user_id != member.user_id:
            raise detail_error(
                400,
                {
                    "error": f"user_email '{member.user_email}' and user_id '{member.user_id}' "
                    "do not belong to "
                    "the same user."
                },
            )
        return
    if member.user_email is not None:
        by_email = _users_with_email(emulator, member.user_email, insensitive=True)
        if not by_email:
            return
        if len(_users_with_email(emulator, member.user_email, insensitive=False)) > 1:
            raise detail_error(
                400,
                {
                    "error": f"Multiple users found with email '{member.user_email}'. "
                    "Please use 'user_id' instead."
                },
            )
        member.user_id = by_email[0].user_id
        return
    if member.user_id is not None:
        user = emulator.state.users.get(member.user_id)
        if user is not None:
            member.user_email = user.user_email


@router.post("/team/member_delete")
async def team_member_delete(
    data: TeamMemberDeleteRequest, request: Request, emulator: EmulatorDep
) -> Any:
    """``team_endpoints.py::_team_member_delete`` (E2 errors).

    Removes the roster entry, the team from ``user.teams``, the membership row
    and (unless the older behaviour is switched on) every key with that
    (user_id, team_id). Personal keys and team keys with no user survive.
    """
    with emulator.state.lock:
        state = emulator.state
        team = state.teams.get(data.team_id)
        if team is None:
            raise detail_error(400, {"error": f"Team id={data.team_id} does not exist in db"})
        require_team_admin(request, team, "/team/member_delete")

        def addressed(m: dict[str, Any]) -> bool:
            return (data.user_id is not None and m.get("user_id") == data.user_id) or (
                data.user_email is not None and m.get("user_email") == data.user_email
            )

        removed = [m for m in team.members_with_roles if addressed(m)]
        remaining = [m for m in team.members_with_roles if not addressed(m)]
        removed_ids = {m["user_id"] for m in removed if m.get("user_id") is not None}
        addressed_ids = (
            removed_ids if removed else ({data.user_id} if data.user_id is not None else set())
        )
        if addressed_ids:
            user_rows = [state.users[uid] for uid in sorted(addressed_ids) if uid in state.users]
        else:
            user_rows = [u for u in state.users.values() if u.user_email == data.user_email]
        stale = [u for u in user_rows if data.team_id in u.teams]
        cleanup = user_rows if removed else stale
        user_ids = addressed_ids | {u.user_id for u in cleanup}
        if not removed and not stale:
            raise detail_error(400, {"error": "User not found in team"})
        if removed:
            team.members_with_roles = remaining
            team.updated_at = utcnow()
        for uid in sorted(user_ids):
            state.unlink_user_from_team(uid, data.team_id)
        if emulator.settings.delete_keys_on_member_delete:
            tokens = [
                k.token
                for k in state.keys.values()
                if k.user_id in user_ids and k.team_id == data.team_id
            ]
            state.delete_keys(tokens, archive=True, deleted_by=ADMIN_USER_ID, changed_by=None)
        return jsonable_encoder(team_model(team.to_row()))


@router.post("/team/member_update", response_model=TeamMemberUpdateResponse)
async def team_member_update(
    data: TeamMemberUpdateRequest, request: Request, emulator: EmulatorDep
) -> Any:
    """``team_endpoints.py::team_member_update`` (E2; licence refusal detail is a bare string).

    Per-member budget fields are kept on the membership row when there is one;
    the real budget-table bookkeeping is not modelled.
    """
    if data.role == "admin" and not emulator.settings.licensed:
        raise detail_error(400, PREMIUM_ADMIN_MESSAGE)
    try:
        check_budget_duration(data.budget_duration)
    except HTTPDetail as exc:
        raise detail_error(exc.status, exc.detail) from None
    with emulator.state.lock:
        state = emulator.state
        team = state.teams.get(data.team_id)
        if team is None:
            raise detail_error(400, {"error": f"Team id={data.team_id} does not exist in db"})
        # the real refusal names /team/member_delete here (copied code in 1.110.2)
        require_team_admin(request, team, "/team/member_delete")
        received_user_id = data.user_id
        if received_user_id is None and data.user_email is not None:
            received_user_id = next(
                (
                    m.get("user_id")
                    for m in team.members_with_roles
                    if m.get("user_email") == data.user_email
                ),
                None,
            )
        if received_user_id is None:
            raise detail_error(400, {"error": f"User id doesn't exist in team table. Data={data}"})
        if data.role is not None:
            if received_user_id not in team.member_user_ids():
                raise detail_error(
                    404,
                    {"error": f"User {received_user_id} is not a member of team {data.team_id}"},
                )
            team.members_with_roles = [
                Member(
                    user_id=m.get("user_id"),
                    role=data.role,
                    user_email=data.user_email or m.get("user_email"),
                ).model_dump()
                if m.get("user_id") == received_user_id
                else m
                for m in team.members_with_roles
            ]
            team.updated_at = utcnow()
        patch = data.model_dump(
            exclude_unset=True,
            include={
                "max_budget_in_team",
                "tpm_limit",
                "rpm_limit",
                "budget_duration",
                "allowed_models",
            },
        )
        membership = state.memberships.get((received_user_id, data.team_id))
        if membership is not None and patch:
            membership.budget.update(patch)
        return TeamMemberUpdateResponse(
            team_id=data.team_id,
            user_id=received_user_id,
            user_email=data.user_email,
            max_budget_in_team=data.max_budget_in_team,
            tpm_limit=data.tpm_limit,
            rpm_limit=data.rpm_limit,
            budget_duration=data.budget_duration,
            allowed_models=data.allowed_models,
            temp_budget_increase=data.temp_budget_increase,
            temp_budget_expiry=data.temp_budget_expiry,
            model_max_budget=data.model_max_budget,
        )


# -- block / unblock / delete ---------------------------------------------------


def _set_blocked(emulator: Emulator, team_id: str, blocked: bool) -> Any:
    """``team_endpoints.py::_set_team_blocked`` (E2 errors)."""
    with emulator.state.lock:
        team = emulator.state.teams.get(team_id)
        if team is None:
            raise detail_error(404, {"error": f"Team not found, passed team_id={team_id}"})
        team.blocked = blocked
        team.updated_at = utcnow()
        return _team_response(team)


@router.post("/team/block")
async def block_team(data: BlockTeamRequest, emulator: EmulatorDep) -> Any:
    """``team_endpoints.py::block_team``: every key with this team_id stops authenticating."""
    return _set_blocked(emulator, data.team_id, True)


@router.post("/team/unblock")
async def unblock_team(data: BlockTeamRequest, emulator: EmulatorDep) -> Any:
    """``team_endpoints.py::unblock_team``."""
    return _set_blocked(emulator, data.team_id, False)


@router.post("/team/delete")
async def delete_team(data: DeleteTeamRequest, request: Request, emulator: EmulatorDep) -> Any:
    """``team_endpoints.py::delete_team`` + ``delete_validated_teams`` (E2 errors).

    All ids are checked first: one unknown id is a 404 and nothing is deleted.
    Then every key with these team ids goes, the teams are stripped from
    ``user.teams`` and membership rows, and the rows move to the deleted-team table.
    """
    with emulator.state.lock:
        state = emulator.state
        for tid in data.team_ids:
            if tid not in state.teams:
                raise detail_error(404, {"error": f"Team not found, passed team_id={tid}"})
        ids = list(dict.fromkeys(data.team_ids))
        tokens = [k.token for k in state.keys.values() if k.team_id in ids]
        state.delete_keys(
            tokens, archive=True, deleted_by=ADMIN_USER_ID, changed_by=changed_by(request)
        )
        now = utcnow()
        for tid in ids:
            team = state.teams.pop(tid)
            state.deleted_teams.append(
                DeletedTeamRow(
                    team=team,
                    deleted_at=now,
                    deleted_by=ADMIN_USER_ID,
                    litellm_changed_by=changed_by(request),
                )
            )
            for user in state.users.values():
                if tid in user.teams:
                    state.unlink_user_from_team(user.user_id, tid)
            for key in [k for k in state.memberships if k[1] == tid]:
                state.memberships.pop(key, None)
        return {"deleted_teams": data.team_ids}
