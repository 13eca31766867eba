"""Reading Keycloak: the group tree, group members, and fresh reads of one subject.

The service account logs in with python-keycloak (client credentials); the
admin REST reads then go through syncd's own HTTP client with one shared token,
explicit paging (``/children`` pages only 10 by default, and python-keycloak's
``get_groups(query=...)`` leaks paging into child fetches) and bounded
concurrency. Any failure raises `SourceReadError` naming the call and the
likely cause, and nothing downstream writes: unknown is not empty.

The reader decides nothing: which groups are teams, and what their members
and settings are, is syncd.desired's business (pure, on a `SourceSnapshot`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog
from keycloak import KeycloakOpenID
from keycloak.exceptions import (
    KeycloakAuthenticationError,
    KeycloakConnectionError,
    KeycloakError,
)

from syncd.config import KeycloakSettings
from syncd.desired import Group, Member, Rules, SourceSnapshot, groups_to_read, parse_group, walk
from syncd.errors import SourceReadError
from syncd.http import ApiClient, all_or_nothing, describe_transport_error
from syncd.secrets import Secrets, cut

log = structlog.get_logger("syncd.keycloak")

T = TypeVar("T")


class TokenProvider(httpx.Auth):
    """One access token shared by all concurrent reads, set on each request as it
    is sent (an httpx auth flow).

    python-keycloak's async calls each refresh on their own, which turns a
    burst of concurrent reads into a burst of token requests; here the first
    caller refreshes under a lock and the rest reuse its token.

    Realms may give tokens a few seconds of life, and a read of a large tree
    through a slow link outlives many. So the token is taken when the request
    really leaves (httpx runs the flow after ApiClient's concurrency slot is
    held, and again for each retry), it is renewed ahead of its expiry
    (`refresh_margin`), and a 401 from the admin API gets one fresh token and
    one resend. Every token is registered with `Secrets` when fetched.
    """

    def __init__(self, kc: KeycloakSettings) -> None:
        Secrets.add(kc.secret())
        self._openid = KeycloakOpenID(
            server_url=kc.url + "/",
            realm_name=kc.realm,
            client_id=kc.client_id,
            client_secret_key=kc.secret(),
            verify=kc.httpx_verify(),
            timeout=int(kc.timeout_seconds) or 1,
        )
        self._client_id = kc.client_id
        self._realm = kc.realm
        self._url = kc.url
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        # Where token requests are counted (KeycloakReader sets its client's):
        # they are requests to Keycloak like any other, and an unreachable
        # Keycloak first shows here.
        self.observe: Callable[[str, str, float], None] | None = None

    async def aclose(self) -> None:
        await self._openid.connection.aclose()

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("TokenProvider is for httpx.AsyncClient only")
        yield request  # pragma: no cover (makes this a generator)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.get()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # Expired early (clock skew), or revoked (realm "not before"): one
            # fresh token and one resend; a second 401 is the caller's to report.
            log.info("keycloak_token_rejected", path=request.url.path,
                     action="fresh token, one resend")
            token = await self.get(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    async def get(self, *, stale: str | None = None) -> str:
        """A valid token; `stale` is one the server just rejected with 401."""
        async with self._lock:
            fresh = self._token is not None and time.monotonic() < self._expires_at
            if fresh and self._token != stale:
                assert self._token is not None
                return self._token
            self._token = await self._fetch()
            return self._token

    async def _fetch(self) -> str:
        where = f"Keycloak token request for client '{self._client_id}' in realm '{self._realm}'"
        asked = time.monotonic()
        try:
            reply = await self._token_request()
        except KeycloakAuthenticationError as exc:
            raise SourceReadError(
                f"{where} failed: authentication refused (HTTP {exc.response_code}); "
                "check keycloak.client_id and the client secret"
            ) from None
        except KeycloakConnectionError as exc:
            cause = exc.__cause__ or exc
            raise SourceReadError(
                f"{where} failed: {describe_transport_error(cause)} at {self._url}"
            ) from None
        except KeycloakError as exc:
            raise SourceReadError(
                f"{where} failed: HTTP {exc.response_code}: {_keycloak_error(exc)} "
                "(is the realm right, and does the client have service accounts enabled?)"
            ) from None
        token = reply.get("access_token") if isinstance(reply, dict) else None
        if not isinstance(token, str):
            raise SourceReadError(f"{where} returned no access_token")
        Secrets.add_token(token)
        refresh = reply.get("refresh_token")
        if isinstance(refresh, str):
            Secrets.add_token(refresh)
        lifetime = _seconds(reply.get("expires_in"), 60.0)
        # Counted from when the request was sent: Keycloak's clock started then,
        # and a slow link may have taken a good part of the lifetime already.
        self._expires_at = asked + lifetime - refresh_margin(lifetime)
        log.debug("keycloak_token_fetched", expires_in=lifetime)
        return token

    async def _token_request(self) -> Any:
        """python-keycloak's token call, counted in the request metrics."""
        start = time.perf_counter()
        status = "error"
        try:
            reply = await self._openid.a_token(grant_type="client_credentials")
            status = "200"
            return reply
        except KeycloakError as exc:
            if exc.response_code:
                status = str(exc.response_code)
            raise
        except asyncio.CancelledError:
            status = ""
            raise
        finally:
            if status and self.observe is not None:
                self.observe("POST", status, time.perf_counter() - start)


def refresh_margin(lifetime: float) -> float:
    """How long before its expiry a token is renewed: a tenth of its life, at
    least 2 s (a request may wait that long on a slow link after the token is
    set), at most half of it (a 5 s token is used for 3 s, a 5 min one for 4.5)."""
    return min(lifetime / 2, max(2.0, lifetime / 10))


def _seconds(value: Any, default: float) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default
    return seconds if 0 < seconds < 10**7 else default


def _error_fields(body: bytes, content_type: str | None = None) -> str:
    """Keycloak's own error fields (``error_description``, ``errorMessage``,
    ``error``), masked and cut; any other body only by size and type, since an
    ingress's error page may echo the request (token, client secret)."""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for name in ("error_description", "errorMessage", "error", "message"):
            if isinstance(parsed.get(name), str) and parsed[name]:
                return cut(parsed[name])
    if not body:
        return "empty body"
    kind = (content_type or "").split(";", 1)[0].strip() or "no type"
    return f"non-JSON body of {len(body)} bytes, {kind}"


def _keycloak_error(exc: KeycloakError) -> str:
    body = exc.response_body
    if body is None:
        raw = exc.error_message
        body = raw if isinstance(raw, bytes) else str(raw).encode()
    return _error_fields(body)




class KeycloakReader:
    """Reads the realm's groups and members as they are; what they mean for
    LiteLLM is decided in syncd.desired."""

    def __init__(
        self,
        api: ApiClient,
        tokens: TokenProvider,
        *,
        realm: str,
        page_size: int,
        client_id: str,
    ) -> None:
        self.api = api
        self.tokens = tokens
        if tokens.observe is None:
            tokens.observe = api.observe
        self.realm = realm
        self.client_id = client_id  # only for naming the service account in errors
        self.prefix = f"/admin/realms/{realm}"
        self.page = page_size

    # -- HTTP -------------------------------------------------------------
    async def _get(
        self, path: str, params: Mapping[str, Any], *, missing_ok: bool = False,
        role: str = "view-users",
    ) -> Any:
        """The JSON reply; with `missing_ok`, None for a 404 (a subject that is gone).
        `role` is the realm-management role a 403 names."""
        what = f"Keycloak GET {self.prefix}{path}"
        try:
            # The token is set by `self.tokens` as the request is sent, and a 401
            # is answered there with one fresh token and one resend.
            response = await self.api.request(
                "GET", self.prefix + path, params=params, auth=self.tokens
            )
        except httpx.TransportError as exc:
            raise SourceReadError(f"{what} failed: {describe_transport_error(exc)}") from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code != 200:
            raise SourceReadError(
                f"{what} failed: {self._explain(response, role)}", status=response.status_code
            )
        try:
            return response.json()
        except ValueError:
            raise SourceReadError(f"{what} returned a body that is not JSON") from None

    def _explain(self, response: httpx.Response, role: str = "view-users") -> str:
        code = response.status_code
        if code == 401:
            return (
                "HTTP 401: the token was rejected, and a fresh one too (is the client's "
                "service account enabled, and the realm's 'not before' in the past?)"
            )
        if code == 403:
            return (
                f"HTTP 403 forbidden: the service account of client '{self.client_id}' lacks "
                f"the realm-management role '{role}'"
            )
        if code == 404:
            return f"HTTP 404 not found (does realm '{self.realm}' exist?)"
        kind = response.headers.get("content-type")
        return f"HTTP {code}: {_error_fields(response.content, kind)}"

    async def _pages(self, path: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """All items of a paged listing; the page size is always explicit.

        Offsets shift when an item before the current page is removed during
        the read, and the item at the page boundary would never be seen. Each
        page therefore starts `overlap` items before the end of the previous
        one, and items are deduplicated by id (an addition shifts the other
        way and is only ever read twice). Keycloak orders these listings
        (members by username, groups by name), so the overlap is meaningful.
        """
        items: dict[str, dict[str, Any]] = {}
        overlap = min(max(1, self.page // 20), self.page - 1)
        first = 0
        while True:
            page = await self._get(path, {**params, "first": first, "max": self.page})
            if not isinstance(page, list) or not all(isinstance(i, dict) for i in page):
                raise SourceReadError(
                    f"Keycloak GET {self.prefix}{path} returned {type(page).__name__}, "
                    "expected a list of objects"
                )
            for item in page:
                items.setdefault(str(item.get("id", len(items))), item)
            if len(page) < self.page:
                return list(items.values())
            first += len(page) - overlap

    # -- the bulk read ------------------------------------------------------
    async def read_snapshot(self, rules: Rules) -> SourceSnapshot:
        """The tree, then concurrently the members of the groups `rules` make
        teams of (and their feeders): everything `syncd.desired.build` needs."""
        groups = await self.read_groups()
        paths = {g.id: g.path for g in walk(groups)}
        ids = sorted(groups_to_read(groups, rules))
        results = await all_or_nothing(self.read_members(i, path=paths[i]) for i in ids)
        return SourceSnapshot(groups=groups, members=dict(zip(ids, results, strict=True)))

    async def read_groups(self) -> list[Group]:
        """The whole group tree, walked level by level with concurrent child reads."""
        top = [
            parse_group(g, None)
            for g in await self._pages("/groups", {"briefRepresentation": "false"})
        ]
        if not top:
            await self._confirm_empty()
        await self._descend(top)
        return top

    async def read_subtree(self, group_id: str) -> Group | None:
        """One group and everything under it as Keycloak has them now, or None
        when the group is gone: what a group's admin event needs re-read. A leaf
        costs one request where the whole tree costs one per parent group.

        The root's `parent_id` is Keycloak's ``parentId`` (sent since Keycloak
        23; without it a nested group cannot be placed, and
        `syncd.fastpath.graft` asks for the whole tree)."""
        raw = await self.read_group(group_id)
        if raw is None:
            return None
        root = parse_group(raw, None)
        parent = raw.get("parentId")
        root.parent_id = str(parent) if parent else None
        await self._descend([root])
        return root

    async def _descend(self, level: list[Group]) -> None:
        """Fill in the children under `level`, a level at a time, concurrently."""
        while level:
            parents = [g for g in level if g.sub_group_count > 0]
            results = await all_or_nothing(self._children(g) for g in parents)
            level = [child for children in results for child in children]

    async def _confirm_empty(self) -> None:
        """An empty listing is believed only if the group count agrees: with the
        `query-groups` role alone Keycloak lists nothing but counts everything."""
        reply = await self._get("/groups/count", {})
        count = reply.get("count") if isinstance(reply, dict) else None
        if count:
            raise SourceReadError(
                f"Keycloak listed no groups but counts {count}: the service account of "
                f"client '{self.client_id}' can count but not read groups "
                "(grant the realm-management role 'view-users')"
            )

    async def _children(self, parent: Group) -> list[Group]:
        raw = await self._pages(f"/groups/{parent.id}/children", {"briefRepresentation": "false"})
        parent.children = [parse_group(g, parent) for g in raw]
        return parent.children

    async def read_members(self, group_id: str, *, path: str | None = None) -> list[Member]:
        """The direct members of a group; `path` only names it in errors."""
        raw = await self._pages(f"/groups/{group_id}/members", {"briefRepresentation": "true"})
        members = []
        for user in raw:
            if "id" not in user or "username" not in user:
                raise SourceReadError(
                    f"Keycloak returned a member of {path or group_id} without id or username"
                )
            members.append(
                Member(
                    id=str(user["id"]),
                    username=str(user["username"]),
                    email=user.get("email"),
                    enabled=user.get("enabled", True) is not False,
                    email_verified=user.get("emailVerified") is True,
                )
            )
        return members

    # -- fresh reads, for confirming destructive steps (syncd.confirm) ----
    async def _object_or_none(self, kind: str, object_id: str) -> dict[str, Any] | None:
        """``GET /{kind}s/{id}``: the object, or None when Keycloak has no such one."""
        reply = await self._get(f"/{kind}s/{quote(object_id, safe='')}", {}, missing_ok=True)
        if reply is not None and not isinstance(reply, dict):
            what = type(reply).__name__
            raise SourceReadError(f"Keycloak returned {what} for {kind} {object_id}")
        return reply

    async def read_user(self, user_id: str) -> dict[str, Any] | None:
        """The user record, or None when Keycloak has no such user."""
        return await self._object_or_none("user", user_id)

    async def read_user_groups(self, user_id: str) -> list[dict[str, Any]]:
        """The groups the user is a direct member of, with their ids and paths."""
        return await self._pages(
            f"/users/{quote(user_id, safe='')}/groups", {"briefRepresentation": "true"}
        )

    async def read_group(self, group_id: str) -> dict[str, Any] | None:
        """The group, or None when it is gone."""
        return await self._object_or_none("group", group_id)

    async def find_users(self, field: str, value: str) -> list[dict[str, Any]]:
        """Users whose `field` (``username`` or ``email``) is exactly `value`: how an
        operator's ``syncd explain alice`` finds alice (``GET /users?exact=true``)."""
        reply = await self._get("/users", {field: value, "exact": "true", "max": 10})
        if not isinstance(reply, list):
            raise SourceReadError(
                f"Keycloak GET {self.prefix}/users returned {type(reply).__name__}"
            )
        return [u for u in reply if isinstance(u, dict)]

    # -- admin events, for the fast path (syncd.events) --------------------
    async def read_events_config(self) -> dict[str, Any]:
        """The realm's event settings (``adminEventsEnabled``); needs 'view-events'."""
        reply = await self._get("/events/config", {}, role="view-events")
        if not isinstance(reply, dict):
            raise SourceReadError(
                f"Keycloak GET {self.prefix}/events/config returned {type(reply).__name__}"
            )
        return reply

    async def read_admin_events(
        self, date_from_ms: int, first: int, max_results: int
    ) -> list[dict[str, Any]]:
        """Admin events stamped at or after `date_from_ms`, oldest first.

        ``dateFrom`` takes epoch milliseconds (inclusive) and ``direction=asc``
        lists oldest first, as Keycloak 26 does (tests/keycloak_facts); paging
        forward then meets new events last instead of shifting under them.
        """
        return await self._event_page(
            {"dateFrom": str(date_from_ms), "direction": "asc", "first": first,
             "max": max_results}
        )

    async def read_oldest_admin_event(self) -> dict[str, Any] | None:
        """The oldest admin event the realm still keeps (retention may have dropped
        older ones), or None when it keeps none."""
        page = await self._event_page({"direction": "asc", "first": 0, "max": 1})
        return page[0] if page else None

    async def read_newest_admin_event(self) -> dict[str, Any] | None:
        """The newest admin event (where the tail starts, in Keycloak's clock), or None."""
        page = await self._event_page({"direction": "desc", "first": 0, "max": 1})
        return page[0] if page else None

    async def _event_page(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        page = await self._get("/admin-events", params, role="view-events")
        if not isinstance(page, list) or not all(isinstance(i, dict) for i in page):
            raise SourceReadError(
                f"Keycloak GET {self.prefix}/admin-events returned {type(page).__name__}, "
                "expected a list of objects"
            )
        return page
