"""Typed client for the LiteLLM management API: full reads, one method per write.

The proxy's quirks are absorbed here so the planner and applier never see
them: three error body shapes, "already a member" and "not a member" answers
that mean the work is done, list endpoints that page differently, and
``metadata`` that ``/team/update`` and ``/user/update`` replace rather than
merge (callers always send the whole dict). Every write carries
``litellm-changed-by`` for LiteLLM's audit trail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import httpx

from syncd.errors import ObjectExists, TargetReadError, TargetWriteError, WriteUncertain
from syncd.http import ApiClient, all_or_nothing, body_summary, describe_transport_error
from syncd.model import (
    DEFAULT_USER_ID,
    MANAGED,
    Actual,
    Key,
    Role,
    Team,
    TeamSettings,
    User,
)
from syncd.secrets import cut
from syncd.view import Rows

T = TypeVar("T")
PREMIUM_HINT = "premium"  # LiteLLM: "Assigning team admins is a premium feature"
EXISTS_HINT = "already exists"  # /team/new 400 and /user/new 409 for an id in use
# A create that lost a race: both /team/new and /user/new check the id, then insert;
# the loser's insert meets the primary key and Prisma's UniqueViolationError comes
# back through handle_exception_on_proxy as a 500 (measured on the real 1.110.2 proxy).
UNIQUE_HINT = "unique constraint failed"
CREATE_PATHS = frozenset({"/team/new", "/user/new"})
# A 5xx that says the write's transaction did not commit: Prisma's interactive
# transaction outlived its limit (``PrismaClient.tx``: timeout 5 s, max_wait 2 s,
# proxy/utils.py) and was rolled back, or no transaction could start at all
# (``no_db_connection`` 503, proxy/db/exception_handler.py).
ROLLED_BACK_TYPES = frozenset({"no_db_connection"})
ROLLED_BACK_HINTS = ("transaction already closed", "transaction api error", "expired transaction",
                     "transactionexpired", "unable to start a transaction")
KEY_GONE = ("key not found",)  # /key/update, /key/block: 404 E3 "Key not found."
MAX_IDS_CHARS = 6000  # a /user/list?user_ids= list, joined: well inside an 8 KB request line
UI_SESSION_TEAM = "litellm-dashboard"  # 1.110.2 constants.UI_SESSION_TOKEN_TEAM_ID


def write_error(path: str, response: httpx.Response) -> TargetWriteError:
    """What a failed write's answer means, decided once from its status and LiteLLM's
    error type and message: ``ObjectExists`` (a create met its id: 400/409 "already
    exists", or the unique-constraint 500 of a lost race), ``WriteUncertain`` (any
    other 5xx: may or may not have applied, retry after a re-read), a licence
    refusal (``kind="premium"``), or a plain refusal that retrying cannot change."""
    status = response.status_code
    text = error_text(response)
    lowered = text.lower()
    message = f"{path}: HTTP {status}: {text}"
    if path in CREATE_PATHS and (
        (status in (400, 409) and EXISTS_HINT in lowered)
        or (status == 500 and UNIQUE_HINT in lowered)
    ):
        return ObjectExists(message, status=status, kind="exists")
    if PREMIUM_HINT in lowered:
        return TargetWriteError(message, status=status, kind="premium")
    if status >= 500:
        rolled_back = error_type(response) in ROLLED_BACK_TYPES or any(
            hint in lowered for hint in ROLLED_BACK_HINTS
        )
        return WriteUncertain(message, status=status, kind="http", rolled_back=rolled_back)
    return TargetWriteError(message, status=status, kind="http")


def error_text(response: httpx.Response) -> str:
    """The message of any of LiteLLM's error shapes (``error.message``, ``detail``,
    ``detail.error``), masked and cut to 200 characters; never the raw body.

    A body that is not LiteLLM's JSON (an ingress's or debug page's HTML may
    echo the request, ``Authorization: Bearer <key>`` included) is described
    by size and type only.
    """
    try:
        body = response.json()
    except ValueError:
        return body_summary(response)
    message: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        detail = body.get("detail")
        if isinstance(err, dict) and "message" in err:
            message = err["message"]
        elif isinstance(detail, dict):
            message = detail.get("error", detail)
        elif detail is not None:
            message = detail
        elif isinstance(err, str):
            message = err
    if message is None:
        return f"JSON body without error.message or detail ({len(response.content)} bytes)"
    return cut(str(message))


def error_type(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("type", "")) if isinstance(err, dict) else ""


ADMIN_ROLE = "proxy_admin"
DEPLOY_HINT = "create a proxy_admin service user and key as in docs/deploy.md"


@dataclass(frozen=True)
class KeyOwner:
    """Who syncd's LiteLLM key acts as: the user LiteLLM attributes every write to.

    LiteLLM adds this user as admin to every team the key creates, so the planner
    must treat it like ``default_user_id`` (see ``Actual.service_user_id``).
    """

    user_id: str
    role: str | None
    master: bool
    key_alias: str | None = None
    expires: str | None = None


async def _into(target: list[T], items: Awaitable[list[T]]) -> None:
    target.extend(await items)


def id_chunks(ids: Sequence[str], size: int, max_chars: int = MAX_IDS_CHARS) -> list[list[str]]:
    """`ids` in order, in lists of at most `size` whose comma-joined length is at
    most `max_chars` (an id longer than that alone gets a list of its own)."""
    chunks: list[list[str]] = []
    chars = 0
    for ident in ids:
        if chunks and len(chunks[-1]) < size and chars + 1 + len(ident) <= max_chars:
            chunks[-1].append(ident)
            chars += 1 + len(ident)
        else:
            chunks.append([ident])
            chars = len(ident)
    return chunks


class LiteLLMClient:
    def __init__(self, api: ApiClient, *, page_size: int, changed_by: str) -> None:
        self.api = api
        self.page_size = page_size
        self.write_headers = {"litellm-changed-by": changed_by}

    # -- reads --------------------------------------------------------------
    async def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        what = f"LiteLLM GET {path}"
        try:
            response = await self.api.request("GET", path, params=params)
        except httpx.TransportError as exc:
            raise TargetReadError(f"{what} failed: {describe_transport_error(exc)}") from None
        if response.status_code != 200:
            hint = " (check litellm.api_key)" if response.status_code in (401, 403) else ""
            raise TargetReadError(
                f"{what} failed: HTTP {response.status_code}: {error_text(response)}{hint}"
            )
        try:
            return response.json()
        except ValueError:
            raise TargetReadError(f"{what} returned a body that is not JSON") from None

    async def _paged(
        self,
        path: str,
        items_key: str,
        size_param: str,
        parse: Callable[[Mapping[str, Any]], T],
        params: Mapping[str, Any] | None = None,
    ) -> list[T]:
        """Read page 1, then the remaining pages concurrently; rows are parsed page by
        page, so the raw JSON of a listing is never held in full next to its parse."""

        async def page(n: int) -> tuple[list[T], int]:
            body = await self._get(path, {**(params or {}), "page": n, size_param: self.page_size})
            if not isinstance(body, dict):
                raise TargetReadError(f"LiteLLM GET {path} returned {type(body).__name__}")
            rows = body.get(items_key)
            pages = body.get("total_pages", 1)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise TargetReadError(f"LiteLLM GET {path}: '{items_key}' is not a list of objects")
            if not isinstance(pages, int):
                raise TargetReadError(f"LiteLLM GET {path}: 'total_pages' is not a number")
            return [parse(r) for r in rows], pages

        items, total_pages = await page(1)
        rest = await all_or_nothing(page(n) for n in range(2, total_pages + 1))
        for more, _ in rest:
            items.extend(more)
        return items

    async def whoami(self) -> KeyOwner:
        """Learn whose key syncd holds, and refuse one that cannot administer LiteLLM.

        ``GET /key/info`` without ``key`` describes the caller's own key. The master
        key is no database row (LiteLLM 1.110.2 looks up its alias
        ``litellm_proxy_master_key``), so a 404 there means "master key": it acts as
        the proxy admin ``default_user_id``. A virtual key's owner role comes from
        ``/user/info``; anything but ``proxy_admin`` cannot create teams, users or
        keys' blocks, and syncd refuses it before any write (exit 5).
        """
        path = "/key/info"
        try:
            response = await self.api.request("GET", path)
        except httpx.TransportError as exc:
            raise TargetReadError(
                f"LiteLLM GET {path} failed: {describe_transport_error(exc)}"
            ) from None
        if response.status_code == 404 and error_type(response) == "not_found_error":
            return KeyOwner(user_id=DEFAULT_USER_ID, role=ADMIN_ROLE, master=True)
        if response.status_code != 200:
            hint = " (check litellm.api_key)" if response.status_code in (401, 403) else ""
            raise TargetReadError(
                f"LiteLLM GET {path} failed: HTTP {response.status_code}: "
                f"{error_text(response)}{hint}"
            )
        body = _json(response, path)
        info = body.get("info") if isinstance(body, dict) else None
        if not isinstance(info, dict):
            raise TargetReadError(f"LiteLLM GET {path}: 'info' is not an object")
        user_id = info.get("user_id")
        alias = info.get("key_alias") if isinstance(info.get("key_alias"), str) else None
        if not isinstance(user_id, str) or not user_id:
            raise TargetReadError(
                "litellm.api_key belongs to no LiteLLM user, so it cannot manage teams, "
                f"users and keys; {DEPLOY_HINT}"
            )
        user = await self._get("/user/info", {"user_id": user_id})
        row = user.get("user_info") if isinstance(user, dict) else None
        role = row.get("user_role") if isinstance(row, dict) else None
        if row is None:
            raise TargetReadError(
                f"litellm.api_key belongs to user {user_id}, who does not exist in LiteLLM; "
                f"{DEPLOY_HINT}"
            )
        if role != ADMIN_ROLE:
            raise TargetReadError(
                f"litellm.api_key belongs to user {user_id} with role {role or 'none'}, "
                f"which cannot manage teams, users and keys: role {ADMIN_ROLE} is missing; "
                f"{DEPLOY_HINT}"
            )
        expires = info.get("expires") if isinstance(info.get("expires"), str) else None
        return KeyOwner(
            user_id=user_id, role=role, master=False, key_alias=alias, expires=expires
        )

    async def read(self) -> Actual:
        team_rows, user_rows, key_rows = await self._read_with(
            self._paged("/user/list", "users", "page_size", parse_user)
        )
        teams = {t.team_id: t for t in team_rows}
        users = {u.user_id: u for u in user_rows}
        keys = {k.token: k for k in key_rows}
        return Actual(teams=teams, users=users, keys=keys)

    async def read_around(
        self, user_ids: Iterable[str]
    ) -> tuple[dict[str, User | None], list[Team], list[Key]]:
        """Every team and every key, by pages, and the rows of `user_ids` (None:
        no such user): LiteLLM whole but for the other users' rows, which are
        what makes a whole read slow on a real proxy (`syncd.view.rows_around`)."""
        uids = sorted(set(user_ids))
        team_rows, user_rows, key_rows = await self._read_with(self._listed_users(uids))
        found = {u.user_id: u for u in user_rows}
        return {uid: found.get(uid) for uid in uids}, team_rows, key_rows

    async def _read_with(
        self, users: Awaitable[list[User]]
    ) -> tuple[list[Team], list[User], list[Key]]:
        """Every team and every key by pages, concurrently with `users`: the
        whole read and the read around a scope differ only in which users."""
        team_rows: list[Team] = []
        user_rows: list[User] = []
        key_rows: list[Key] = []
        await all_or_nothing((
            _into(team_rows, self._paged("/v2/team/list", "teams", "page_size", parse_team)),
            _into(user_rows, users),
            _into(key_rows, self._paged(
                "/key/list", "keys", "size", parse_key, {"return_full_object": "true"},
            )),
        ))
        return team_rows, user_rows, key_rows

    async def _listed_users(self, uids: Sequence[str]) -> list[User]:
        """The rows of `uids`, a hundred to a request: ``GET /user/list?user_ids=a,b``.

        1.110.2 ``internal_user_endpoints.py::get_users`` matches a list of two
        or more ids exactly (Prisma ``in``) but a lone id as a case-insensitive
        substring, so a lone id is sent twice. An id holding a comma cannot be
        listed at all and is read with ``/user/info``. Rows other than those
        asked for are dropped, whatever the proxy answers. A request's list
        stays under `MAX_IDS_CHARS`, so long e-mail ids never make a request
        line an ingress refuses (nginx's default buffer is 8 KB)."""
        chunks = id_chunks([u for u in uids if "," not in u], self.page_size)

        async def chunk(ids: list[str]) -> list[User]:
            listed = ids if len(ids) > 1 else ids * 2
            return await self._paged("/user/list", "users", "page_size", parse_user,
                                     {"user_ids": ",".join(listed)})

        async def one(uid: str) -> list[User]:
            row, _, _ = await self.read_user(uid)
            return [] if row is None else [row]

        lists = await all_or_nothing([*(chunk(c) for c in chunks),
                                      *(one(u) for u in uids if "," in u)])
        wanted = set(uids)
        return [u for rows in lists for u in rows if u.user_id in wanted]

    async def _info(self, path: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """One object's ``/…/info`` body; None when LiteLLM says it does not exist (404)."""
        what = f"LiteLLM GET {path}"
        try:
            response = await self.api.request("GET", path, params=params)
        except httpx.TransportError as exc:
            raise TargetReadError(f"{what} failed: {describe_transport_error(exc)}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TargetReadError(
                f"{what} failed: HTTP {response.status_code}: {error_text(response)}"
            )
        body = _json(response, path)
        if not isinstance(body, dict):
            raise TargetReadError(f"{what} returned {type(body).__name__}, not an object")
        return body

    async def read_user(self, user_id: str) -> tuple[User | None, list[Key], list[str]]:
        """One user's row, all its keys and the ids of its teams, in one request.

        ``GET /user/info?user_id=`` (1.110.2 ``internal_user_endpoints.py::user_info``)
        answers the user row, every key whose ``user_id`` is the user
        (``_get_user_info_keys``: full rows, token hash included) and the teams
        whose roster names the user (``_get_user_info_teams``); 404 "User X not
        found" when there is no such user.
        """
        body = await self._info("/user/info", {"user_id": user_id})
        if body is None:
            return None, [], []
        row = body.get("user_info")
        if not isinstance(row, dict):
            return None, [], []
        teams = body.get("teams") or []
        if not isinstance(teams, list):
            raise TargetReadError("LiteLLM GET /user/info: 'teams' is not a list")
        team_ids = [t["team_id"] for t in teams
                    if isinstance(t, dict) and isinstance(t.get("team_id"), str)]
        return parse_user(row), _key_rows(body, "/user/info"), team_ids

    async def read_team(self, team_id: str) -> tuple[Team | None, list[Key]]:
        """One team's row (members included) and all keys bound to it, in one request.

        ``GET /team/info?team_id=`` (1.110.2 ``team_endpoints.py::team_info``)
        answers ``team_info`` and ``keys`` (its loop meant to drop each key's
        ``token`` pops it from a copy, so the hashes are there); 404 "Team not
        found" when there is no such team.
        """
        body = await self._info("/team/info", {"team_id": team_id})
        if body is None:
            return None, []
        row = body.get("team_info")
        if not isinstance(row, dict):
            raise TargetReadError("LiteLLM GET /team/info: 'team_info' is not an object")
        return parse_team(row), _key_rows(body, "/team/info")

    async def read_rows(self, user_ids: Iterable[str], team_ids: Iterable[str]) -> Rows:
        """Fresh rows of a few users and teams, concurrently: what a scoped run
        trusts over the kept view (`syncd.view`)."""
        uids, tids = sorted(set(user_ids)), sorted(set(team_ids))
        user_rows = await all_or_nothing(self.read_user(u) for u in uids)
        team_rows = await all_or_nothing(self.read_team(t) for t in tids)
        return Rows(
            users={u: row for u, (row, _, _) in zip(uids, user_rows, strict=True)},
            teams={t: row for t, (row, _) in zip(tids, team_rows, strict=True)},
            user_keys={u: tuple(keys) for u, (_, keys, _) in zip(uids, user_rows, strict=True)},
            team_keys={t: tuple(keys) for t, (_, keys) in zip(tids, team_rows, strict=True)},
            user_teams={u: tuple(ts) for u, (_, _, ts) in zip(uids, user_rows, strict=True)},
        )

    # -- writes -------------------------------------------------------------
    async def _post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        ok: Sequence[str] = (),
        gone_ok: bool = False,
    ) -> httpx.Response:
        """Send a write; a 4xx whose message contains one of `ok` counts as done, and
        so does 404 for deletions (`gone_ok`): what is gone needs no deleting."""
        try:
            response = await self.api.request(
                "POST", path, json=dict(body), headers=self.write_headers
            )
        except httpx.TransportError as exc:
            # Timed out or cut off: the proxy may have committed before the answer was lost.
            raise WriteUncertain(
                f"{path}: {describe_transport_error(exc)}", kind="transport"
            ) from None
        if response.status_code < 300:
            return response
        text = error_text(response)
        if gone_ok and response.status_code == 404:
            return response
        if 400 <= response.status_code < 500 and any(s.lower() in text.lower() for s in ok):
            return response
        if error_type(response) in ok:  # E3 bodies name the condition in `type`
            return response
        raise write_error(path, response)

    async def _create(
        self,
        path: str,
        body: Mapping[str, Any],
        info_path: str,
        params: Mapping[str, Any],
        row_key: str,
        *,
        ours: Callable[[dict[str, Any]], bool],
        refusal: Callable[[TargetWriteError], str],
    ) -> bool:
        """A create that is safe to retry or to race: True when it created, False
        when the object already exists and `ours` recognises it (a lost answer, or
        another run); an existing object that is not syncd's is a conflict."""
        try:
            await self._post(path, body)
        except ObjectExists as exc:
            found = await self._lookup(info_path, params)
            row = found.get(row_key) if found else None
            if isinstance(row, dict) and ours(row):
                return False
            raise TargetWriteError(refusal(exc), status=exc.status, kind="conflict") from None
        return True

    async def _lookup(self, path: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """A read in the middle of a write (checking what a create ran into): the body,
        None for 404; any other failure is that write's failure, not a read error."""
        try:
            response = await self.api.request("GET", path, params=params)
        except httpx.TransportError as exc:
            raise TargetWriteError(
                f"{path}: {describe_transport_error(exc)}", kind="transport"
            ) from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TargetWriteError(
                f"{path}: HTTP {response.status_code}: {error_text(response)}",
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            raise TargetWriteError(f"{path} returned a body that is not JSON") from None
        return body if isinstance(body, dict) else None

    async def create_user(
        self, user_id: str, email: str | None, username: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Create a user; False when it exists already with this very id.

        A retry after a lost answer, or a second syncd run, meets LiteLLM's 409 "User
        with id X already exists" (``internal_user_endpoints.py::new_user`` checks the
        id before the email). That is the user syncd wanted: done. A clash on the
        email alone (another user holds it) stays a failure.
        """
        body: dict[str, Any] = {
            "user_id": user_id,
            "user_alias": username,
            "user_role": "internal_user",
            "auto_create_key": False,  # LiteLLM would otherwise mint a personal key
            "metadata": {MANAGED: True, **(metadata or {})},
        }
        if email:
            body["user_email"] = email
        return await self._create(
            "/user/new", body, "/user/info", {"user_id": user_id}, "user_info",
            ours=lambda row: row.get("user_id") == user_id,
            refusal=lambda exc: (
                f"{exc} (and no LiteLLM user has id {user_id}: another user holds this "
                "email; resolve the duplicate in LiteLLM)"
            ),
        )

    async def update_user_metadata(self, user_id: str, metadata: Mapping[str, Any]) -> None:
        await self._post("/user/update", {"user_id": user_id, "metadata": dict(metadata)})

    async def update_user_profile(self, user_id: str, fields: Mapping[str, Any]) -> None:
        """``user_email`` / ``user_alias`` only. LiteLLM 1.110.2's /user/update does not
        check that an email is unique (only /user/new does), so the planner does."""
        await self._post("/user/update", {"user_id": user_id, **fields})

    async def release_email(
        self, user_id: str, metadata: Mapping[str, Any], to_user_id: str, to_email: str
    ) -> None:
        """Move an address from a departed user to its new holder (`ReleaseEmail`).

        LiteLLM 1.110.2 cannot clear an email with null: /user/update drops None
        values (``internal_user_endpoints.py::_update_internal_user_params`` keeps
        only ``v is not None and v not in ([], {})``), so ``""`` is what empties it.
        The departed user's metadata goes in the same request (the whole dict: it is
        replaced), so the address is never gone without its audit record. Both
        writes can be sent again; if the second fails, the address is free and the
        next run gives it like any email change.
        """
        await self._post(
            "/user/update", {"user_id": user_id, "user_email": "", "metadata": dict(metadata)}
        )
        await self._post("/user/update", {"user_id": to_user_id, "user_email": to_email})

    async def create_team(
        self, team_id: str, alias: str, settings: TeamSettings, metadata: Mapping[str, Any]
    ) -> bool:
        """Create a team; False when it exists already and carries syncd's marker.

        LiteLLM answers a second ``/team/new`` for one id with 400 "Team id = X
        already exists" (``team_endpoints.py::new_team``). If ``/team/info`` shows
        ``syncd_managed``, it is syncd's own team from a create whose answer was
        lost, or from another run: done, and its members can be added. A team
        without the marker was made by someone else after this run's read; it is
        not taken over here (the planner's adoption rules decide next run).
        """
        body = {"team_id": team_id, "team_alias": alias, "metadata": dict(metadata)}
        body.update(settings.managed_items())
        return await self._create(
            "/team/new", body, "/team/info", {"team_id": team_id}, "team_info",
            ours=lambda row: isinstance(meta := row.get("metadata"), dict)
            and meta.get(MANAGED) is True,
            refusal=lambda _: (
                f"team {team_id} already exists in LiteLLM without syncd's marker "
                f"(metadata {MANAGED}): someone created it after this run read LiteLLM. "
                "Not taken over; its members wait. The next run skips it, or adopts it "
                "with teams.adopt_existing: true"
            ),
        )

    async def update_team(
        self, team_id: str, fields: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        body = {"team_id": team_id, **fields, "metadata": dict(metadata)}
        await self._post("/team/update", body)

    async def block_team(self, team_id: str, metadata: Mapping[str, Any]) -> None:
        # Mark first: a crash in between leaves a marked, unblocked team that the
        # next plan blocks again, never a blocked team syncd does not recognise.
        await self._post("/team/update", {"team_id": team_id, "metadata": dict(metadata)})
        await self._post("/team/block", {"team_id": team_id})

    async def unblock_team(self, team_id: str, metadata: Mapping[str, Any]) -> None:
        await self._post("/team/unblock", {"team_id": team_id})
        await self._post("/team/update", {"team_id": team_id, "metadata": dict(metadata)})

    async def delete_team(self, team_id: str) -> None:
        await self._post("/team/delete", {"team_ids": [team_id]}, gone_ok=True)

    async def add_members(self, team_id: str, members: Sequence[tuple[str, Role]]) -> None:
        """One member_add for many users; already-present ones are skipped by LiteLLM."""
        member: Any = [{"user_id": uid, "role": role} for uid, role in members]
        if len(member) == 1:
            member = member[0]
        await self._post(
            "/team/member_add",
            {"team_id": team_id, "member": member},
            ok=("already in team", "already a member", "team_member_already_in_team"),
        )

    async def team_member_ids(self, team_id: str) -> set[str] | None:
        """Who is in the team now (``/team/info``), read in the middle of a batched
        member_add whose answer was uncertain, to learn what it applied; None when
        the team is not there."""
        found = await self._lookup("/team/info", {"team_id": team_id})
        row = found.get("team_info") if found else None
        if not isinstance(row, dict):
            return None
        return {
            m["user_id"] for m in row.get("members_with_roles") or []
            if isinstance(m, dict) and isinstance(m.get("user_id"), str)
        }

    async def change_member_role(self, team_id: str, user_id: str, role: Role) -> None:
        await self._post(
            "/team/member_update", {"team_id": team_id, "user_id": user_id, "role": role}
        )

    async def remove_member(self, team_id: str, user_id: str) -> None:
        await self._post(
            "/team/member_delete",
            {"team_id": team_id, "user_id": user_id},
            ok=("not found in team", "not a member"),
        )

    async def delete_keys(self, tokens: Sequence[str]) -> None:
        await self._post("/key/delete", {"keys": list(tokens)}, gone_ok=True)

    async def block_key(self, token: str, metadata: Mapping[str, Any]) -> None:
        # Marker before block, so a key blocked by syncd is always recognisable.
        # A key that is gone (LiteLLM's 404 "Key not found.", e.g. deleted with a
        # membership by another run) gives no access any more: nothing to block.
        marked = await self._post(
            "/key/update", {"key": token, "metadata": dict(metadata)}, ok=KEY_GONE
        )
        if marked.status_code == 404:
            return
        await self._post("/key/block", {"key": token}, ok=KEY_GONE)

    async def unblock_key(self, token: str, unblock: bool, metadata: Mapping[str, Any]) -> None:
        if unblock:
            await self._post("/key/unblock", {"key": token})
        await self._post("/key/update", {"key": token, "metadata": dict(metadata)})

    async def delete_user(self, user_id: str) -> None:
        await self._post("/user/delete", {"user_ids": [user_id]}, gone_ok=True)


# --- parsing rows --------------------------------------------------------------


def _json(response: httpx.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise TargetReadError(f"LiteLLM GET {path} returned a body that is not JSON") from None


def _req(row: Mapping[str, Any], key: str, what: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise TargetReadError(f"LiteLLM returned a {what} row without '{key}'")
    return value


def _metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    value = row.get("metadata")
    return dict(value) if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


# Each TeamSettings field by its declared type (None stripped), so that a new
# setting is read from LiteLLM's rows without code here.
_SETTING_HINTS = get_type_hints(TeamSettings)
_SETTING_TYPES = {
    f.name: next(t for t in get_args(_SETTING_HINTS[f.name]) if t is not type(None))
    for f in fields(TeamSettings)
}


def _setting(value: Any, kind: Any) -> Any:
    """A row's value as the setting's type; anything else is "not managed"."""
    if get_origin(kind) is tuple:
        return tuple(value) if isinstance(value, list) else None
    if kind is float:
        return _num(value)
    if kind is int:
        return _int(value)
    return value


def parse_team(row: Mapping[str, Any]) -> Team:
    team_id = _req(row, "team_id", "team")
    members: dict[str, Role] = {}
    for m in row.get("members_with_roles") or []:
        if isinstance(m, dict) and isinstance(m.get("user_id"), str):
            members[m["user_id"]] = "admin" if m.get("role") == "admin" else "user"
    return Team(
        team_id=team_id,
        alias=row.get("team_alias"),
        settings=TeamSettings(
            **{name: _setting(row.get(name), kind) for name, kind in _SETTING_TYPES.items()}
        ),
        members=members,
        metadata=_metadata(row),
        blocked=row.get("blocked") is True,
    )


def parse_user(row: Mapping[str, Any]) -> User:
    return User(
        user_id=_req(row, "user_id", "user"),
        email=row.get("user_email"),
        role=row.get("user_role"),
        metadata=_metadata(row),
        alias=row.get("user_alias") if isinstance(row.get("user_alias"), str) else None,
    )


def parse_key(row: Mapping[str, Any]) -> Key:
    return Key(
        token=_req(row, "token", "key"),
        user_id=row.get("user_id") or None,
        team_id=row.get("team_id") or None,
        alias=row.get("key_alias"),
        key_name=row.get("key_name"),
        blocked=row.get("blocked") is True,
        metadata=_metadata(row),
    )


def _key_rows(body: Mapping[str, Any], path: str) -> list[Key]:
    rows = body.get("keys") or []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TargetReadError(f"LiteLLM GET {path}: 'keys' is not a list of objects")
    # UI session keys (team "litellm-dashboard") are no one's access to manage.
    return [parse_key(r) for r in rows if r.get("team_id") != UI_SESSION_TEAM]
