"""One reconcile, full or scoped: observe, plan, execute, report.

`Reconciler.run` takes one request (`syncd.requests`) and returns an immutable
`RunReport`. The daemon's one worker and ``--once`` call nothing else, so a
scheduled run, a run for an admin event and a dry run go through the same
steps:

1. **Observe.** A full request reads all of Keycloak and all of LiteLLM
   (concurrently; either failing ends the run before any write). A scoped
   request re-reads the users and groups its events name from Keycloak, folds
   them into the snapshot of the last full read (`syncd.fastpath`), and reads
   from LiteLLM only the rows of the users and teams in scope, laid over the
   kept view of LiteLLM (`syncd.view`). A kept row that disagrees with a fresh
   one means LiteLLM changed outside syncd: the report asks for a full
   reconcile.
2. **Plan** (`syncd.plan.make_plan`, pure), within the scope if there is one.
3. **Execute**, one loop for every mode: what only adds or restores first;
   then each destructive step is confirmed by a fresh Keycloak read of its
   subject; then the confirmed steps. A dry run or ``--check`` runs the same
   loop with writing off (ldap2pg's ``real`` flag), confirmation reads
   included, so the plan it shows is the plan a real run would apply.
4. **Report**: the facts of the run, frozen once it is over.

The clients live as long as the process (`Clients`): one token provider and
pooled connections; each run gets its own retry budget and request count.
After each run, the rows of the subjects it wrote to are re-read so the kept
view is what LiteLLM holds, never a guess about what a write did.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import structlog

from syncd.apply import Applier, ApplyResult
from syncd.config import Settings
from syncd.confirm import Confirmer, with_unconfirmed
from syncd.desired import (
    Built,
    Group,
    Member,
    Rules,
    SourceSnapshot,
    build,
    groups_to_read,
    settings_of,
)
from syncd.errors import (
    ConfigRefused,
    ExitCode,
    RunInterrupted,
    RunResult,
    SourceReadError,
    SyncdError,
    TargetReadError,
)
from syncd.events import Hints
from syncd.evidence import SourceFacts
from syncd.fastpath import (
    FreshUser,
    changed_teams,
    graft,
    member_of,
    missing_members,
    patch,
    scope_of,
    unknown_groups,
)
from syncd.http import ApiClient, RequestCounter, RetryBudget, all_or_nothing
from syncd.identity import check_rule, owner, rule_id
from syncd.keycloak import KeycloakReader, TokenProvider
from syncd.litellm import KeyOwner, LiteLLMClient
from syncd.metrics import Metrics
from syncd.model import Actual, Desired, Scope
from syncd.operations import DeleteUser, Op, ReleaseEmail
from syncd.plan import Plan, Policy, make_plan
from syncd.report import Names, summary_line
from syncd.requests import Full, ReconcileRequest, Scoped
from syncd.view import (
    Rows,
    differences,
    overlay,
    rows_around,
    subjects_of,
    unsettled_teams,
)

log = structlog.get_logger("syncd.sync")

Mode = Literal["apply", "dry-run", "check"]
Kind = Literal["full", "scoped"]
ReadKind = Literal["rows", "around", "whole"]  # how LiteLLM rows are read afresh
T = TypeVar("T")

SCOPED_READ_LIMIT = 16
"""LiteLLM rows (one request each) a scoped run may always read one by one;
beyond that and beyond the requests of a read around the scope
(`syncd.view.rows_around`), that read is cheaper, and it is what the run does."""


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class RunStats:
    """The numbers a run ends with: the summary line, the fields of the
    ``sync_finished`` event and the ``summary`` of ``--json`` (field order kept)."""

    result: str
    mode: str
    groups: int
    teams: int
    users: int
    memberships: int
    planned: int
    applied: int
    failed: int
    already_existed: int
    refused: int
    interrupted: int
    not_started: int
    batches_split: int
    retried: int
    held_back: int
    unconfirmed: int
    kc_confirm_reads: int
    kc_requests: int
    ll_requests: int
    ll_reads: int
    ll_writes: int
    duration: float
    exit_code: int
    kind: str = "full"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        return summary_line(self.as_dict())


@dataclass(frozen=True)
class RunReport:
    """What one run found and did, frozen when it ended. The result and the exit
    code are derived from these facts rather than stored next to them, so they
    cannot disagree."""

    run_id: str
    mode: Mode
    kind: Kind
    failure: SyncdError | None = None  # what ended the run early, if anything did
    desired: Desired | None = None
    actual: Actual | None = None
    plan: Plan | None = None  # as executed: unconfirmed steps listed, not in operations
    applied: ApplyResult | None = None
    read_warnings: tuple[str, ...] = ()  # Keycloak's, before the plan
    apply_warnings: tuple[str, ...] = ()  # confirmation and writes
    confirm_reads: int = 0  # Keycloak reads spent confirming destructive steps
    requests: RequestCounter = field(default_factory=RequestCounter)
    scope: Scope | None = None  # a scoped run: the subjects it re-read and planned
    duration: float = 0.0
    cancelled: bool = False  # cut off by a cancellation; the daemon's worker then ends
    # LiteLLM rows that disagreed with the kept view, or a view that could not
    # be refreshed: the next request should be a full reconcile.
    needs_full: str | None = None

    @property
    def error(self) -> str | None:
        return str(self.failure) if self.failure is not None else None

    @property
    def result(self) -> RunResult:
        if isinstance(self.failure, RunInterrupted):
            # What reached LiteLLM counts: a stop after some writes is no plain failure.
            return RunResult.PARTIAL if self.applied and self.applied.done else RunResult.FAILURE
        if self.failure is not None:
            return RunResult.FAILURE
        if self.mode != "apply":  # dry run and check write nothing
            return RunResult.SUCCESS
        if self.plan is not None and self.plan.braked:
            # The brake wins over partial failures: it needs a person to look.
            return RunResult.BRAKED
        if self.applied is not None and self.applied.failed:
            return RunResult.PARTIAL
        return RunResult.SUCCESS

    @property
    def exit_code(self) -> ExitCode:
        """The process exit code (README.md "Exit codes"); decided here and nowhere else."""
        if self.failure is not None:
            return self.failure.exit_code
        if self.mode == "check":
            return ExitCode.DRIFT if self.plan else ExitCode.OK
        if self.mode == "dry-run":
            return ExitCode.OK
        match self.result:
            case RunResult.BRAKED:
                return ExitCode.BRAKE
            case RunResult.PARTIAL:
                return ExitCode.PARTIAL
        if self.plan is not None and self.plan.unresolved_identities:
            # Everything else was done; some people need a person to look
            # (their warnings name both sides). Not "partial": retrying won't help.
            return ExitCode.WARNINGS
        return ExitCode.OK

    @property
    def run_warnings(self) -> list[str]:
        """The warnings the plan does not already carry (and print)."""
        return [*self.read_warnings, *self.apply_warnings]

    @property
    def warnings(self) -> list[str]:
        """Every warning, in the order the run met them."""
        plan = list(self.plan.warnings) if self.plan is not None else []
        return [*self.read_warnings, *plan, *self.apply_warnings]

    @property
    def stats(self) -> RunStats:
        desired, plan, applied, counter = self.desired, self.plan, self.applied, self.requests
        return RunStats(
            result=self.result.value,
            mode=self.mode,
            groups=desired.groups_seen if desired else 0,
            teams=len(desired.teams) if desired else 0,
            users=len(desired.users) if desired else 0,
            memberships=sum(len(t.members) for t in desired.teams.values()) if desired else 0,
            planned=len(plan.operations) + len(plan.unconfirmed) if plan else 0,
            applied=len(applied.done) if applied else 0,
            failed=len(applied.failed) if applied else 0,
            already_existed=applied.existed if applied else 0,
            refused=len(applied.refused) if applied else 0,
            interrupted=len(applied.interrupted) if applied else 0,
            not_started=applied.not_started if applied else 0,
            batches_split=applied.batches_split if applied else 0,
            retried=applied.retried if applied else 0,
            held_back=len(plan.held_back) if plan else 0,
            unconfirmed=len(plan.unconfirmed) if plan else 0,
            kc_confirm_reads=self.confirm_reads,
            kc_requests=counter.total("keycloak"),
            ll_requests=counter.total("litellm"),
            ll_reads=counter.total("litellm", "read"),
            ll_writes=counter.total("litellm", "write"),
            duration=round(self.duration, 3),
            exit_code=int(self.exit_code),
            kind=self.kind,
        )

    @property
    def names(self) -> Names:
        if self.desired is None or self.actual is None:
            return Names()
        return Names.from_states(self.desired, self.actual)


@dataclass
class _Facts:
    """What a run has learnt so far. Written by the steps as facts become known,
    read once, by `RunReport` at the end: no step decides on it."""

    desired: Desired | None = None
    actual: Actual | None = None
    plan: Plan | None = None
    applied: ApplyResult | None = None
    read_warnings: list[str] = field(default_factory=list)
    apply_warnings: list[str] = field(default_factory=list)
    confirm_reads: int = 0
    scope: Scope | None = None
    needs_full: str | None = None


# --------------------------------------------------------------------------- settings


def rules_from(settings: Settings) -> Rules:
    """What turns groups into teams, for the pure builder (syncd.desired)."""
    sel, teams, members = settings.selection, settings.teams, settings.members
    return Rules(
        path_prefixes=tuple(sel.path_prefixes),
        attribute=sel.attribute,
        exclude_paths=tuple(sel.exclude_paths),
        flatten=sel.flatten,
        admin_subgroup=members.admin_subgroup,
        default_role=members.default_role,
        alias_from=teams.alias_from,
        attribute_prefix=teams.attribute_prefix,
        defaults=settings_of(teams.defaults),
        overrides={path: settings_of(spec) for path, spec in teams.overrides.items()},
    )


def policy_from(settings: Settings, now: datetime, *, force: bool = False) -> Policy:
    """The planner's policy: the planner stays free of the configuration layer,
    and this is the one module that holds Settings."""
    return Policy(
        now=now,
        adopt_existing=settings.teams.adopt_existing,
        enterprise_license=settings.litellm.enterprise_license,
        departure_policy=settings.departures.policy,
        departure_grace=timedelta(days=settings.departures.grace_days),
        delete_users=settings.departures.delete_users,
        removed_team_policy=settings.teams.removed_policy,
        removed_team_grace=timedelta(days=settings.teams.removed_grace_days),
        ignore_users=frozenset(settings.departures.ignore_users),
        id_from=settings.users.id_from,
        link_by_email=settings.users.link_by_email,
        max_blocked=settings.safety.max_blocked,
        max_blocked_fraction=settings.safety.max_blocked_fraction,
        max_deleted=settings.safety.max_deleted,
        max_deleted_fraction=settings.safety.max_deleted_fraction,
        fraction_from_memberships=settings.safety.fraction_from_memberships,
        brake_released=force,
    )


# --------------------------------------------------------------------------- clients


class Clients:
    """The process's connections to both sides, opened once: one Keycloak token
    provider, pooled HTTP clients. Each run starts with `start_run`, which gives
    both clients that run's retry budget and request count."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        kc, ll = settings.keycloak, settings.litellm
        budget, counter = RetryBudget(0), RequestCounter()
        self.retries_per_run = settings.retries.max_retries_per_run
        self.tokens = TokenProvider(kc)
        self.keycloak_api = ApiClient(
            "keycloak", kc.url, verify=kc.httpx_verify(), timeout=kc.timeout_seconds,
            concurrency=kc.concurrency, retries=settings.retries, budget=budget,
            metrics=metrics, counter=counter,
        )
        self.litellm_api = ApiClient(
            "litellm", ll.url, verify=ll.httpx_verify(), timeout=ll.timeout_seconds,
            concurrency=ll.concurrency, retries=settings.retries, budget=budget,
            metrics=metrics, counter=counter,
            headers={"Authorization": f"Bearer {ll.key()}"},
        )
        self.reader = KeycloakReader(
            self.keycloak_api, self.tokens, realm=kc.realm, page_size=kc.page_size,
            client_id=kc.client_id,
        )
        self.target = LiteLLMClient(
            self.litellm_api, page_size=ll.page_size, changed_by=ll.changed_by
        )

    def start_run(self) -> RequestCounter:
        """A fresh retry budget (shared by both sides) and request count."""
        budget, counter = RetryBudget(self.retries_per_run), RequestCounter()
        self.keycloak_api.start_run(budget, counter)
        self.litellm_api.start_run(budget, counter)
        return counter

    async def aclose(self) -> None:
        await asyncio.gather(
            self.keycloak_api.aclose(), self.litellm_api.aclose(), self.tokens.aclose()
        )


# --------------------------------------------------------------------------- reconciler


class Reconciler:
    """Runs requests one at a time; keeps what the next scoped run builds on.

    `keep_view` (the daemon) keeps the last Keycloak snapshot and the kept view
    of LiteLLM between runs; ``--once`` has no next run and keeps nothing.
    """

    def __init__(
        self, settings: Settings, clients: Clients, metrics: Metrics, *, keep_view: bool
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.metrics = metrics
        self.keep_view = keep_view
        self.rules = rules_from(settings)
        self.snapshot: SourceSnapshot | None = None  # Keycloak, as of the last read
        self.built: Built | None = None  # what that snapshot asks for (built once)
        self.view: Actual | None = None  # LiteLLM, kept current by fresh rows
        self.owner: KeyOwner | None = None  # whose key syncd holds (full runs ask)

    @property
    def can_scope(self) -> bool:
        return self.snapshot is not None and self.view is not None

    async def observe(self) -> RequestCounter:
        """Read both sides whole and keep them, without planning or confirming:
        the kept state an operator's scoped request (``syncd sync --user``) builds
        on. Raises SourceReadError / TargetReadError like a full run's reads;
        returns the requests it made."""
        counter = self.clients.start_run()
        snapshot, built, actual = await _read_both(self._read_source(), self._read_target())
        self._keep(snapshot, built, actual)
        return counter

    def _keep(self, snapshot: SourceSnapshot, built: Built, view: Actual) -> None:
        """The state the next scoped run builds on."""
        self.snapshot, self.built, self.view = snapshot, built, view

    async def run(
        self,
        request: ReconcileRequest,
        *,
        mode: Mode = "apply",
        force: bool = False,
        stop: asyncio.Event | None = None,
        now: datetime | None = None,
    ) -> RunReport:
        """Run `request`; never raises for expected failures (see `RunReport.exit_code`).

        `stop` ends the run early and honestly: reads are abandoned, no new write
        starts, writes in flight finish, and the report counts what was applied.
        A cancellation is such an end too, for the writes it cut off as well; the
        report then says `cancelled`.
        """
        scoped = isinstance(request, Scoped) and self.can_scope
        kind: Kind = "scoped" if scoped else "full"
        run_id = uuid.uuid4().hex[:12]
        structlog.contextvars.bind_contextvars(run_id=run_id)
        event = "fast_path" if scoped else "sync"
        try:
            hints = request.hints
            if scoped:
                log.info(f"{event}_started", users=len(hints.users), groups=len(hints.groups),
                         events=hints.events)
            else:
                reason = request.reason if isinstance(request, Full) else "no kept state yet"
                log.info(f"{event}_started", mode=mode, reason=reason)
            report = await self._run(request, scoped, kind, run_id, mode, force, stop,
                                     now or datetime.now(UTC), event)
            self._record(report)
            stats = report.stats
            extra = {"events": hints.events} if scoped else {}
            log.info(f"{event}_finished", summary=stats.summary, **extra, **stats.as_dict())
        finally:
            structlog.contextvars.unbind_contextvars("run_id")
        return report

    async def _run(
        self, request: ReconcileRequest, scoped: bool, kind: Kind, run_id: str, mode: Mode,
        force: bool, stop: asyncio.Event | None, now: datetime, event: str,
    ) -> RunReport:
        facts = _Facts()
        counter = self.clients.start_run()
        started = time.perf_counter()
        failure: SyncdError | None = None
        cancelled = False
        policy = policy_from(self.settings, now, force=force)
        try:
            if scoped:
                await self._scoped(request.hints, facts, mode, policy, stop)
            else:
                await self._full(facts, mode, policy, stop)
        except RunInterrupted:
            failure = _interrupted(facts.applied)
        except asyncio.CancelledError:
            # A second signal, or the daemon's shutdown timeout: the writes in
            # flight were cut off. The report says so (`cancelled`) and is still
            # returned, so what reached LiteLLM is counted; the daemon's worker
            # then ends, --once exits 143.
            failure = _interrupted(facts.applied)
            cancelled = True
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self.view = None  # what the cut-off writes did is unknown
        except Exception as exc:  # expected (SyncdError) or a bug: keep the daemon alive
            failure = self._failed(exc, event)
        return RunReport(
            run_id=run_id, mode=mode, kind=kind, failure=failure, desired=facts.desired,
            actual=facts.actual, plan=facts.plan, applied=facts.applied,
            read_warnings=tuple(facts.read_warnings), apply_warnings=tuple(facts.apply_warnings),
            confirm_reads=facts.confirm_reads, requests=counter, scope=facts.scope,
            duration=time.perf_counter() - started, cancelled=cancelled,
            needs_full=facts.needs_full,
        )

    def _failed(self, exc: Exception, event: str) -> SyncdError:
        """What ended a run: a SyncdError as itself (``<event>_failed``), anything
        else as a bug with its traceback (``<event>_crashed``, exit 10). Called from
        an ``except`` block, so the traceback is there to log."""
        if isinstance(exc, SyncdError):
            self.metrics.errors.labels(stage=exc.stage).inc()
            log.error(f"{event}_failed", stage=exc.stage, error=str(exc))
            return exc
        self.metrics.errors.labels(stage="internal").inc()
        log.exception(f"{event}_crashed")
        return SyncdError(f"internal error: {type(exc).__name__}: {exc}")

    # -- observe

    async def _full(
        self, facts: _Facts, mode: Mode, policy: Policy, stop: asyncio.Event | None
    ) -> None:
        snapshot, built, actual = await _unless_stopped(
            _read_both(self._read_source(), self._read_target()), stop
        )
        if self.keep_view:
            self._keep(snapshot, built, actual)
        await self._plan_and_execute(facts, built, actual, None, mode, policy, stop)

    async def _read_source(self) -> tuple[SourceSnapshot, Built]:
        """Keycloak as it is, then what it asks for (the build is pure and quick)."""
        snapshot = await self.clients.reader.read_snapshot(self.rules)
        return snapshot, build(snapshot, self.rules)

    async def _read_target(self, *, owner_known: bool = False) -> Actual:
        """Who syncd's key acts as (refusing a key that cannot administer), then LiteLLM.

        The key's own user is carried in ``Actual.service_user_id`` so the planner
        never removes, blocks or counts it. `owner_known`: a read within a run
        that follows a full one (a scoped run's whole read, the view's refresh)
        keeps the owner that full run found rather than asking again.
        """
        target = self.clients.target
        found = self.owner if owner_known and self.owner is not None else await target.whoami()
        if found != self.owner:
            log.info(
                "litellm_identity", user_id=found.user_id, role=found.role,
                master_key=found.master, key_alias=found.key_alias, expires=found.expires,
            )
            if found.master:
                log.warning(
                    "litellm_master_key_in_use",
                    hint="run syncd on a dedicated proxy_admin key (docs/deploy.md)",
                )
        self.owner = found
        actual = await target.read()
        check_rule(actual, self.settings.users.id_from)
        return replace(actual, service_user_id=found.user_id)

    async def _scoped(
        self, hints: Hints, facts: _Facts, mode: Mode, policy: Policy,
        stop: asyncio.Event | None,
    ) -> None:
        base, built_before, view = self.snapshot, self.built, self.view
        assert base is not None and built_before is not None and view is not None
        old = built_before.desired
        snapshot, built, scope = await _unless_stopped(
            self._scoped_source(base, old, hints), stop
        )
        facts.scope = scope
        rows = await _unless_stopped(self._scoped_rows(view, old, built.desired, scope), stop)
        if rows is None:  # too many rows for one by one: read LiteLLM whole
            actual = await _unless_stopped(self._read_target(owner_known=True), stop)
        else:
            drift = differences(view, rows)
            if drift:
                shown = ", ".join(drift[:5]) + (f" and {len(drift) - 5} more" if len(drift) > 5
                                                else "")
                facts.needs_full = f"LiteLLM changed outside syncd: {shown}"
                log.warning("view_disagreed", subjects=len(drift), detail=shown,
                            action="fresh rows used; full reconcile next")
            actual = overlay(view, rows)
        if self.keep_view:
            self._keep(snapshot, built, actual)
        await self._plan_and_execute(facts, built, actual, scope, mode, policy, stop)

    async def _scoped_source(
        self, base: SourceSnapshot, old: Desired, hints: Hints
    ) -> tuple[SourceSnapshot, Built, Scope]:
        """Fresh reads of the hinted users (record and direct groups) and, when a
        group changed or a user is in a group the snapshot never saw, of the group
        tree and the members of groups that now feed a team."""
        reader, rules = self.clients.reader, self.rules
        fresh = await all_or_nothing(_fresh_user(reader, u) for u in sorted(hints.users))
        changed = hints.groups | unknown_groups(base, fresh)
        tree = await self._tree(base.groups, changed) if changed else None
        members: dict[str, list[Member]] = {}
        if tree is not None:
            wanted = missing_members(base, rules, tree) | (
                hints.groups & groups_to_read(tree, rules)
            )
            ids = sorted(wanted)
            lists = await all_or_nothing(reader.read_members(g) for g in ids)
            members = dict(zip(ids, lists, strict=True))
        snapshot = patch(base, rules, fresh=fresh, tree=tree, members=members)
        new = build(snapshot, rules)
        scope = scope_of(hints.users, hints.groups, base, old, new.desired)
        return snapshot, new, scope

    async def _tree(self, groups: list[Group], changed: Iterable[str]) -> list[Group]:
        """The tree with the subtrees of `changed` groups re-read (`graft`): a
        deleted leaf group costs one request, where reading the whole tree costs
        one per parent group (about 100 at 1,000 groups). The whole tree is read
        when a subtree cannot be placed in the kept one."""
        reader, ids = self.clients.reader, sorted(changed)
        subtrees = await all_or_nothing(reader.read_subtree(g) for g in ids)
        tree = graft(groups, dict(zip(ids, subtrees, strict=True)))
        if tree is None:
            log.info("group_tree_reread", groups=len(ids),
                     reason="a changed group could not be placed in the kept tree")
            return await reader.read_groups()
        return tree

    async def _scoped_rows(
        self, view: Actual, old: Desired, desired: Desired, scope: Scope
    ) -> Rows | None:
        """The LiteLLM rows a plan for `scope` depends on, read fresh; None when
        they are too many to read one by one and listing the scope's users costs
        as much as reading LiteLLM whole (`_read_kind`).

        Always the rows of the scope's users and teams. For a change of users
        only, also every team where what those users should be changed (a
        membership to add, remove or change is planned from its fresh row),
        and every team where the users' fresh rows and the view disagree on
        membership (`unsettled_teams`). Their other teams, and for a change of
        groups the other teams of their members, are taken from the view: what
        syncd wrote there is in it, and a role changed there by hand waits for
        the next full reconcile.
        """
        users = self._litellm_ids(view, scope.users, (old, desired))
        teams = set(scope.teams)
        if not scope.teams:
            teams |= changed_teams(old, desired, scope.users)
        kind = self._read_kind(view, users, teams)
        if kind == "whole":
            log.info("scoped_read_whole", users=len(users), teams=len(teams))
            return None
        return await self._rows(view, users, teams, kind, more_teams=not scope.teams)

    def _pages(self, rows: int) -> int:
        return -(-rows // self.settings.litellm.page_size)

    def _read_kind(self, view: Actual, users: set[str], teams: set[str]) -> ReadKind:
        """How to read these rows afresh: one by one within `_row_budget`
        (however small LiteLLM is); beyond it, around the users (every team
        and key, and their rows), unless listing their rows costs as many
        requests as listing everyone's: then whole, which also refreshes the
        rest of the view."""
        if len(users) + len(teams) <= self._row_budget(view, len(users)):
            return "rows"
        if self._pages(len(users)) >= max(1, self._pages(len(view.users))):
            return "whole"
        return "around"

    def _row_budget(self, view: Actual, users: int) -> int:
        """Rows worth reading one by one (a request each): at least
        `SCOPED_READ_LIMIT`, and as many as a read around `users` costs requests
        (the pages of teams and keys, and of those users' rows)."""
        around = self._pages(len(view.teams)) + self._pages(len(view.keys)) + self._pages(users)
        return max(SCOPED_READ_LIMIT, around)

    def _litellm_ids(
        self, view: Actual, keycloak_ids: Iterable[str], states: Iterable[Desired]
    ) -> set[str]:
        """The LiteLLM user ids Keycloak users may have: under the rule, and any
        LiteLLM user syncd recorded as theirs."""
        wanted = set(keycloak_ids)
        rule = self.settings.users.id_from
        out: set[str] = set()
        for state in states:
            for kc in wanted & set(state.users):
                uid = rule_id(state.users[kc], rule)
                if uid is not None:
                    out.add(uid)
        if rule == "id":
            out |= wanted
        out.update(uid for uid, user in view.users.items() if owner(user) in wanted)
        return out

    async def _rows(
        self, view: Actual, users: set[str], teams: set[str], kind: ReadKind, *,
        more_teams: bool = True,
    ) -> Rows:
        """Rows of users and teams, then (`more_teams`) of the other teams where
        the users' fresh rows and the view disagree on who is a member (a
        membership made or removed by hand since the last read;
        `unsettled_teams`). Read `around` the users instead: every team and
        key, and those users' rows."""
        target = self.clients.target
        if kind == "around":
            log.info("litellm_read_around", users=len(users), teams=len(teams),
                     row_limit=self._row_budget(view, len(users)))
            return rows_around(view, *await target.read_around(users))
        rows = await target.read_rows(users, teams)
        more = unsettled_teams(view, rows)
        if more and more_teams:
            extra = await target.read_rows((), more)
            rows = replace(
                rows, teams={**rows.teams, **extra.teams},
                team_keys={**rows.team_keys, **extra.team_keys},
            )
        return rows

    # -- plan and execute

    async def _plan_and_execute(
        self, facts: _Facts, built: Built, actual: Actual, scope: Scope | None, mode: Mode,
        policy: Policy, stop: asyncio.Event | None,
    ) -> None:
        """Plan (within `scope`, if any) and execute: the part full and scoped runs
        share, so they apply the same rules the same way."""
        desired = built.desired
        facts.desired, facts.actual = desired, actual
        facts.read_warnings.extend(built.warnings)
        managed = actual.managed_teams
        if not desired.teams and managed:
            raise SourceReadError(
                f"Keycloak returned no selected groups ({desired.groups_seen} groups in all) "
                f"while {len(managed)} teams are managed; refusing to treat that as everyone "
                "leaving. Check the realm and the selection settings."
            )
        plan = make_plan(desired, actual, policy, scope)
        facts.plan = plan
        if scope is None and mode == "apply":  # these gauges describe the whole state
            self.metrics.pending_changes.set(len(plan.operations) + len(plan.held_back))
            self.metrics.unresolved_identities.set(plan.unresolved_identities)
            self.metrics.withheld_emails.set(plan.withheld_emails)
        real = mode == "apply"
        target = self.clients.target
        applier = Applier(target, self.metrics, target.api.budget, stop,
                          in_flight=self.settings.litellm.concurrency)
        if real:
            facts.applied = applier.result
        try:
            await self._execute(facts, plan, desired, applier, real)
        finally:
            if real and self.keep_view:
                await self._refresh(facts, applier.result)
        applied = applier.result
        if real:
            facts.apply_warnings.extend(applied.warnings)
        final = facts.plan
        assert final is not None
        if real and final.braked:
            log.warning(
                "safety_brake_engaged", reason=final.brake_reason, held_back=len(final.held_back),
                failed=len(applied.failed),
            )
            for op in final.held_back:
                log.warning("held_back", op=op.KIND, **op.ids())
        if applied.config_error is not None:
            # Everything else was applied; the run still ends in this one error.
            raise ConfigRefused(applied.config_error)

    async def _execute(
        self, facts: _Facts, plan: Plan, desired: Desired, applier: Applier, real: bool
    ) -> None:
        """The one loop for every mode. Everything that only adds or restores
        first; then, just before the destructive part, a fresh read of each of its
        subjects; with `real` off nothing is written but the plan is the same."""
        safe = [op for op in plan.operations if not op.DESTRUCTIVE]
        destructive = [op for op in plan.operations if op.DESTRUCTIVE]
        if real:
            await applier.apply(safe)
            if applier.stopped:
                applier.result.not_started += len(destructive)
                raise RunInterrupted("stopped")
        if not destructive:
            return
        facts_of_source = SourceFacts(desired.sources, desired.groups_known)
        confirmer = Confirmer(self.clients.reader, facts_of_source, self.rules)
        confirmed, dropped = await confirmer.confirm(destructive)
        facts.confirm_reads = confirmer.reads
        facts.plan = with_unconfirmed(plan, dropped)
        if real:
            for op, _ in dropped:
                self.metrics.unconfirmed.labels(operation=op.KIND).inc()
        if dropped:
            facts.apply_warnings.append(
                f"{len(dropped)} destructive change(s) skipped this run: a fresh read of "
                "Keycloak did not confirm them (see change_unconfirmed events)"
            )
        if real:
            await applier.apply(confirmed)
            if applier.stopped:
                raise RunInterrupted("stopped")

    async def _refresh(self, facts: _Facts, applied: ApplyResult) -> None:
        """Re-read the rows of every subject this run wrote to (or tried to), so
        the kept view is what LiteLLM holds. A view that cannot be refreshed is
        dropped: the next request then reads LiteLLM whole."""
        view = self.view
        if view is None:
            return
        attempted: list[Op] = [*applied.done, *(op for op, _ in applied.failed),
                               *applied.interrupted]
        if not attempted:
            return
        users = {op.user_id for op in attempted if op.user_id is not None}
        users |= {op.to_user_id for op in attempted if isinstance(op, ReleaseEmail)}
        teams = {op.team_id for op in attempted if op.team_id is not None}
        # Deleting a user takes them off every team's roster too (1.110.2
        # ``internal_user_endpoints.py::delete_user`` calls
        # ``delete_users_from_current_teams``): those teams are re-read; other
        # writes change only the rows they name (member_delete's key deletions
        # are keys of the team and the user it names).
        gone = {op.user_id for op in attempted if isinstance(op, DeleteUser)}
        teams |= subjects_of(view, gone, ())[1]
        try:
            kind = self._read_kind(view, users, teams)
            if kind == "whole":
                fresh = await self._read_target(owner_known=True)
                self.view = fresh
            else:
                self.view = overlay(view, await self._rows(view, users, teams, kind))
        except (TargetReadError, asyncio.CancelledError) as exc:
            self.view = None
            facts.needs_full = "the kept view of LiteLLM could not be refreshed after writing"
            log.warning("view_dropped", error=str(exc) or type(exc).__name__,
                        action="the next request reads LiteLLM whole")
            if isinstance(exc, asyncio.CancelledError):
                raise

    # -- metrics

    def _record(self, report: RunReport) -> None:
        """A run's metrics: full runs in the run metrics, scoped runs in the
        fast path's; the changes they wrote alike. Dry runs and checks record
        nothing (they change nothing)."""
        if report.mode != "apply":
            return
        metrics = self.metrics
        if report.applied:
            for op in report.applied.done:
                metrics.changes.labels(operation=op.KIND).inc()
            for op, _ in report.applied.failed:
                metrics.operation_failures.labels(operation=op.KIND).inc()
            if report.applied.failed:
                metrics.errors.labels(stage="apply").inc()
        if report.kind == "scoped":
            metrics.fast_runs.labels(result=report.result.value).inc()
            return
        now = time.time()
        result = report.result
        metrics.runs.labels(result=result.value).inc()
        metrics.run_duration.observe(report.duration)
        metrics.last_run.set(now)
        if result is RunResult.SUCCESS:
            metrics.last_success.set(now)
            metrics.consecutive_failures.set(0)
        elif result.failed:
            metrics.consecutive_failures.inc()
        if report.plan is not None:
            metrics.brake_engaged.set(1 if report.plan.braked else 0)
            metrics.held_back.set(len(report.plan.held_back))
        if report.desired is not None and report.plan is not None:
            skipped = {s.team_id for s in report.plan.skipped}
            teams = [t for tid, t in report.desired.teams.items() if tid not in skipped]
            metrics.managed_teams.set(len(teams))
            metrics.managed_members.set(sum(len(t.members) for t in teams))


# --------------------------------------------------------------------------- helpers


async def _fresh_user(reader: KeycloakReader, user_id: str) -> FreshUser:
    record = await reader.read_user(user_id)
    if record is None:
        return FreshUser(user_id, None, frozenset())
    groups = await reader.read_user_groups(user_id)
    return FreshUser(
        user_id, member_of(record), frozenset(str(g["id"]) for g in groups if "id" in g)
    )


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event | None) -> T:
    """Await `work` (reads) unless `stop` is set first: then abandon it and raise
    RunInterrupted. Nothing has been written yet, so there is nothing to wait for."""
    if stop is None:
        return await work
    if stop.is_set():
        if asyncio.iscoroutine(work):
            work.close()
        raise RunInterrupted("stopped before reading")
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise RunInterrupted("stopped while reading")
    return task.result()


def _interrupted(applied: ApplyResult | None) -> RunInterrupted:
    """The stop that ended a run: what reached LiteLLM is counted, not lost."""
    if applied is None:
        error = "stopped before any write; nothing was written"
    else:
        error = (
            f"stopped before the run finished: {len(applied.done)} change(s) applied, "
            f"{len(applied.failed)} failed, {len(applied.interrupted)} cut off in flight "
            f"(may or may not have been applied), {applied.not_started} not started; "
            "the next run plans what is left"
        )
    log.warning("sync_interrupted", error=error)
    return RunInterrupted(error)


async def _read_both(
    source: Coroutine[Any, Any, tuple[SourceSnapshot, Built]],
    target: Coroutine[Any, Any, Actual],
) -> tuple[SourceSnapshot, Built, Actual]:
    """Read both sides at once; the first failure cancels the other read."""
    try:
        async with asyncio.TaskGroup() as group:
            desired_task = group.create_task(source)
            actual_task = group.create_task(target)
    except ExceptionGroup as group_error:
        errors = group_error.exceptions
        # Report the Keycloak side first: it decides whether anything may be written.
        first = next((e for e in errors if isinstance(e, SourceReadError)), errors[0])
        raise first from None
    return (*desired_task.result(), actual_task.result())

