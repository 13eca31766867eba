"""What a request costs on the real proxy: time, a shared CPU, and member writes'
transaction limit (issue #21).

The real LiteLLM 1.110.2 proxy runs its management endpoints in one Python
process (the Helm chart's default: one worker), so requests share one CPU and
a request's latency grows with the number in flight; the emulator, which does
the same work in microseconds, would hide that. With a ``CostModel`` every
request holds one of ``workers`` "CPU" slots for ``base_ms + per_item_ms x
items`` (items: the page size of a list read, the members of a member_add, the
keys of a key/delete), so a benchmark on the emulator sees the proxy's costs.
The figures come from the real proxy (see the README, "Costs"); the default
model is "off" (no cost), which is what the tests use unless they ask.

Two behaviours follow the real source rather than timing:

* **Member writes in a transaction, serialised per team, with a time limit.**
  ``team_endpoints.py::_add_team_members_to_team`` opens ``prisma_client.tx()``
  (``proxy/utils.py::PrismaClient.tx``: ``timeout`` 5 s, ``max_wait`` 2 s),
  takes the team's advisory lock (``TEAM_ADVISORY_LOCK_SQL``) inside it, and
  writes each member on that transaction. A batch waiting for another batch to
  the same team spends its own transaction's time; when lock wait plus work
  exceed ``tx_timeout_ms`` Prisma expires the transaction, nothing commits and
  the proxy answers 500 (``TransactionExpiredError``, P2028).
* **Creates that check, work, then insert.** ``team_endpoints.py::new_team``
  and ``internal_user_endpoints.py::new_user`` check the id, then insert; a
  create that lost a race meets the primary key and the proxy answers 500
  "Unique constraint failed on the fields: (`team_id`)" (``user_id``), the
  Prisma ``UniqueViolationError`` through ``utils.py::handle_exception_on_proxy``.
  The emulator charges the create's cost between its check and its insert, so
  two concurrent creates of one id race the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, Field

from devtools.litellm_emulator.faults import ADMIN_PREFIX, ASGIApp, Message, Receive, Scope, Send

TX_EXPIRED_MESSAGE = (
    "Transaction already closed: A query cannot be executed on an expired transaction. The "
    "timeout for this transaction was {limit} ms, however {spent} ms passed since the start of "
    "the transaction. Consider increasing the interactive transaction timeout or doing less "
    "work in the transaction."
)
"""Prisma's P2028 text. On the real proxy the next member write on the expired
transaction raises it, and ``team_endpoints.py::_process_team_members`` wraps it:
500 E2 ``{"detail": {"error": "Unable to add user - <member>, to team - <id>, for
reason - Transaction already closed: ..."}}`` (seen on the real proxy)."""

UNIQUE_MESSAGE = "Unique constraint failed on the fields: (`{field}`)"

# Paths whose per-item cost is charged by the handler, inside the transaction or
# between a create's check and its insert, not up front by the middleware.
IN_HANDLER = frozenset({"/team/member_add", "/team/new", "/user/new"})


class RouteCost(BaseModel):
    """One route's cost: ``base_ms`` per request plus ``per_item_ms`` per item."""

    path: str
    method: str = "POST"
    base_ms: float = Field(default=0.0, ge=0)
    per_item_ms: float = Field(default=0.0, ge=0)


class CostModel(BaseModel):
    """The whole cost setup; ``PUT /_emulator/costs`` replaces it."""

    name: str = "off"
    workers: int = Field(default=1, ge=1)
    """Requests the proxy works on at once at full speed (its CPU); more wait."""
    read_ms: float = Field(default=0.0, ge=0)
    """Any read without a route of its own."""
    write_ms: float = Field(default=0.0, ge=0)
    """Any write without a route of its own."""
    tx_timeout_ms: float | None = Field(default=None, ge=0)
    """Member writes' transaction limit; None: no limit (the model "off")."""
    routes: list[RouteCost] = Field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.routes or self.read_ms or self.write_ms or self.tx_timeout_ms)

    def route(self, method: str, path: str) -> RouteCost:
        for route in self.routes:
            if route.path == path and route.method == method.upper():
                return route
        fallback = self.read_ms if method.upper() in ("GET", "HEAD") else self.write_ms
        return RouteCost(path=path, method=method.upper(), base_ms=fallback)


class CostMeter:
    """The active model, the proxy's CPU slots and the teams' advisory locks."""

    def __init__(self, model: CostModel | None = None) -> None:
        self.model = model or CostModel()
        self._cpu: asyncio.Semaphore | None = None
        self._team_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.expired = 0  # transactions rolled back for the time limit
        self.races = 0  # creates answered with the unique-constraint 500

    def configure(self, model: CostModel) -> None:
        self.model = model.model_copy(deep=True)
        self._cpu = None  # new size; requests holding the old one finish on it

    @property
    def active(self) -> bool:
        return self.model.active

    async def spend(self, ms: float) -> None:
        """Hold one CPU slot for ``ms`` (waiting for a slot is not counted in ``ms``)."""
        if ms <= 0:
            return
        if self._cpu is None:
            self._cpu = asyncio.Semaphore(self.model.workers)
        async with self._cpu:
            await asyncio.sleep(ms / 1000.0)

    async def spend_items(self, method: str, path: str, items: int) -> None:
        await self.spend(self.model.route(method, path).per_item_ms * items)

    def team_lock(self, team_id: str) -> asyncio.Lock:
        return self._team_locks[team_id]

    def tx_expired(self, started: float) -> str | None:
        """The P2028 message when a transaction started at ``started`` outlived the limit."""
        limit = self.model.tx_timeout_ms
        spent = (time.monotonic() - started) * 1000.0
        if limit is None or spent <= limit:
            return None
        self.expired += 1
        return TX_EXPIRED_MESSAGE.format(limit=int(limit), spent=int(spent))

    def snapshot(self) -> dict[str, Any]:
        return {**self.model.model_dump(), "expired": self.expired, "races": self.races}


def _items(method: str, path: str, query: str, body: bytes) -> int:
    """What a request's per-item cost counts: the page size asked for on a list,
    the members of a member_add, the keys/ids of a delete."""
    if method in ("GET", "HEAD"):
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name in ("page_size", "size") and value.isdigit():
                return int(value)
        return 0
    if not body:
        return 0
    try:
        data = json.loads(body)
    except ValueError:
        return 0
    if not isinstance(data, dict):
        return 0
    for name in ("member", "keys", "user_ids", "team_ids"):
        found: Any = data.get(name)
        if isinstance(found, list):
            return len(found)
        if isinstance(found, dict):
            return 1
    return 1


class CostMiddleware:
    """Charge each emulated request its up-front cost before the API sees it."""

    def __init__(self, app: ASGIApp, *, meter: CostMeter) -> None:
        self.app = app
        self.meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.meter.active
            or str(scope["path"]).startswith(ADMIN_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        method = str(scope["method"]).upper()
        path = str(scope["path"])
        messages: list[Message] = []
        body = b""
        if method not in ("GET", "HEAD"):
            while True:  # read the body once, then replay it to the app
                message = await receive()
                messages.append(message)
                body += message.get("body", b"")
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
        route = self.meter.model.route(method, path)
        ms = route.base_ms
        if path not in IN_HANDLER:
            query = scope.get("query_string", b"").decode("latin-1")
            ms += route.per_item_ms * _items(method, path, query, body)
        await self.meter.spend(ms)
        if not messages:
            await self.app(scope, receive, send)
            return
        replay = iter(messages)

        async def replayed() -> Message:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed, send)


# Measured on the real LiteLLM 1.110.2 proxy (PostgreSQL 15, one proxy process,
# 10,000 users in 1,000 teams, a quiet 2-core machine; `python -m bench.costs
# --target real`, 5 December 2026; the table is in the README, "Costs"): each
# route's base and per-item figure fitted to the medians of requests sent alone.
# One worker: the proxy's one Python process is what saturates. Routes not
# measured (/user/update, /team/update, /team/member_delete, /key/block ...)
# take `write_ms`, the one-member member_add's figure.
REAL_1_110_2 = CostModel(
    name="real-1.110.2",
    workers=1,
    read_ms=85.0,
    write_ms=90.0,
    tx_timeout_ms=5000.0,
    routes=[
        RouteCost(path="/v2/team/list", method="GET", base_ms=52.0, per_item_ms=0.33),
        RouteCost(path="/team/list", method="GET", base_ms=52.0, per_item_ms=0.33),
        RouteCost(path="/user/list", method="GET", base_ms=50.0, per_item_ms=7.3),
        RouteCost(path="/key/list", method="GET", base_ms=48.0, per_item_ms=0.43),
        RouteCost(path="/team/info", method="GET", base_ms=86.0),
        RouteCost(path="/user/info", method="GET", base_ms=275.0),
        RouteCost(path="/team/member_add", base_ms=52.0, per_item_ms=38.7),
        RouteCost(path="/team/new", base_ms=10.0, per_item_ms=150.0),
        RouteCost(path="/user/new", base_ms=10.0, per_item_ms=64.0),
        RouteCost(path="/key/delete", base_ms=48.0, per_item_ms=7.0),
    ],
)

PROFILES: dict[str, CostModel] = {"off": CostModel(), REAL_1_110_2.name: REAL_1_110_2}


def cost_model(spec: str) -> CostModel:
    """A named profile, or a ``CostModel`` JSON file."""
    if spec in PROFILES:
        return PROFILES[spec].model_copy(deep=True)
    with open(spec, encoding="utf-8") as handle:
        return CostModel.model_validate(json.load(handle))
