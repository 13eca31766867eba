"""One sync run, from reading both sides to the last write, and its bookkeeping.

Both reads run concurrently and must both finish without error before
anything is planned; then the plan is printed (dry run, check) or applied.
The outcome carries the exit code, the numbers for the summary line, and is
recorded in the metrics. The daemon and ``--once`` share this one function.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import structlog

from syncd.apply import Applier, ApplyResult
from syncd.config import Settings
from syncd.confirm import Confirmer, with_unconfirmed
from syncd.desired import (
    Built,
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
)
from syncd.events import Hints
from syncd.evidence import SourceFacts
from syncd.fastpath import FreshUser, member_of, missing_members, patch, scope_of, unknown_groups
from syncd.http import ApiClient, RequestCounter, RetryBudget, all_or_nothing
from syncd.keycloak import KeycloakReader, TokenProvider
from syncd.litellm import LiteLLMClient
from syncd.metrics import Metrics
from syncd.model import Actual, Desired, Scope
from syncd.plan import Plan, Policy, make_plan
from syncd.report import Names, summary_line

log = structlog.get_logger("syncd.sync")

Mode = Literal["apply", "dry-run", "check"]
T = TypeVar("T")


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        return summary_line(self.as_dict())


@dataclass
class RunOutcome:
    """What one run found and did. The result and the exit code are derived from
    these facts rather than stored next to them, so they cannot disagree."""

    run_id: str
    mode: Mode
    failure: SyncdError | None = None  # what ended the run early, if anything did
    desired: Desired | None = None
    actual: Actual | None = None
    plan: Plan | None = None
    applied: ApplyResult | None = None
    read_warnings: list[str] = field(default_factory=list)  # Keycloak's, before the plan
    apply_warnings: list[str] = field(default_factory=list)  # confirmation and writes
    confirm_reads: int = 0  # Keycloak reads spent confirming destructive steps
    requests: RequestCounter = field(default_factory=RequestCounter)
    # The raw Keycloak read behind `desired`: the daemon keeps it for the fast path.
    snapshot: SourceSnapshot | None = None
    scope: Scope | None = None  # a fast-path run: the subjects it re-read and planned
    duration: float = 0.0
    cancelled: bool = False  # the daemon cancelled the run: run_sync re-raises after recording

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
            planned=len(plan.operations) if plan else 0,
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
        )

    @property
    def names(self) -> Names:
        if self.desired is None or self.actual is None:
            return Names()
        return Names.from_states(self.desired, self.actual)


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


def _clients(
    settings: Settings, metrics: Metrics, counter: RequestCounter
) -> tuple[ApiClient, ApiClient]:
    budget = RetryBudget(settings.retries.max_retries_per_run)
    kc, ll = settings.keycloak, settings.litellm
    keycloak_api = ApiClient(
        "keycloak", kc.url, verify=kc.httpx_verify(), timeout=kc.timeout_seconds,
        concurrency=kc.concurrency, retries=settings.retries, budget=budget,
        metrics=metrics, counter=counter,
    )
    litellm_api = ApiClient(
        "litellm", ll.url, verify=ll.httpx_verify(), timeout=ll.timeout_seconds,
        concurrency=ll.concurrency, retries=settings.retries, budget=budget,
        metrics=metrics, counter=counter,
        headers={"Authorization": f"Bearer {ll.key()}"},
    )
    return keycloak_api, litellm_api


def _reader(settings: Settings, api: ApiClient, tokens: TokenProvider) -> KeycloakReader:
    kc = settings.keycloak
    return KeycloakReader(
        api, tokens, realm=kc.realm, page_size=kc.page_size, client_id=kc.client_id
    )


def _target(settings: Settings, api: ApiClient) -> LiteLLMClient:
    ll = settings.litellm
    return LiteLLMClient(api, page_size=ll.page_size, changed_by=ll.changed_by)


async def run_sync(
    settings: Settings,
    *,
    mode: Mode = "apply",
    force: bool = False,
    metrics: Metrics | None = None,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
) -> RunOutcome:
    """Run one full reconcile; never raises for expected failures (see `exit_code`).

    `stop` (set by ``--once``'s signal handler) ends the run early and honestly:
    reads are abandoned, no new write starts, writes in flight finish, and the
    summary counts what was applied. A cancellation while `stop` is set (a second
    signal) is such an end too; without `stop` (the daemon) it is recorded like
    one and then propagates.
    """
    metrics = metrics or Metrics()
    run_id = uuid.uuid4().hex[:12]
    structlog.contextvars.bind_contextvars(run_id=run_id)
    try:
        log.info("sync_started", mode=mode)
        outcome = await _run(settings, run_id, mode, metrics, force, now or datetime.now(UTC), stop)
        if mode == "apply":
            _record(metrics, outcome)
        stats = outcome.stats
        log.info("sync_finished", summary=stats.summary, **stats.as_dict())
    finally:
        structlog.contextvars.unbind_contextvars("run_id")
    if outcome.cancelled:
        raise asyncio.CancelledError  # the daemon's own cancellation: it logs run_cancelled
    return outcome


async def _run(
    settings: Settings,
    run_id: str,
    mode: Mode,
    metrics: Metrics,
    force: bool,
    now: datetime,
    stop: asyncio.Event | None = None,
) -> RunOutcome:
    """One run's outcome, however the run ended: every expected failure lands in
    ``outcome.failure`` rather than being raised, so that the facts gathered before
    it (what was read, planned, written) still reach the summary and the metrics."""
    outcome = RunOutcome(run_id=run_id, mode=mode)
    started = time.perf_counter()
    try:
        await _reconcile(settings, outcome, metrics, force, now, stop)
    except RunInterrupted:
        outcome.failure = _interrupted(outcome)
    except asyncio.CancelledError:
        outcome.failure = _interrupted(outcome)
        task = asyncio.current_task()
        if stop is None or not stop.is_set():
            outcome.cancelled = True
        elif task is not None:
            task.uncancel()  # a second signal to --once: an interruption, not a crash
    except Exception as exc:  # expected (SyncdError) or a bug: keep the daemon alive
        _failed(outcome, metrics, exc, "sync")
    outcome.duration = time.perf_counter() - started
    return outcome


def _failed(outcome: RunOutcome, metrics: Metrics, exc: Exception, event: str) -> None:
    """Record what ended a run: a SyncdError as itself (``<event>_failed``), anything
    else as a bug with its traceback (``<event>_crashed``, exit 10). Called from an
    ``except`` block, so the traceback is there to log."""
    if isinstance(exc, SyncdError):
        outcome.failure = exc
        metrics.errors.labels(stage=exc.stage).inc()
        log.error(f"{event}_failed", stage=exc.stage, error=str(exc))
        return
    outcome.failure = SyncdError(f"internal error: {type(exc).__name__}: {exc}")
    metrics.errors.labels(stage="internal").inc()
    log.exception(f"{event}_crashed")


async def _reconcile(
    settings: Settings,
    outcome: RunOutcome,
    metrics: Metrics,
    force: bool,
    now: datetime,
    stop: asyncio.Event | None = None,
) -> None:
    """Read, plan, write; record each fact on `outcome` as soon as it is known, and
    raise for anything that ends the run early."""
    rules = rules_from(settings)
    async with _connections(settings, metrics, outcome) as (reader, target):
        snapshot, built, actual = await _unless_stopped(
            _read_both(_read_source(reader, rules), target), stop
        )
        outcome.snapshot = snapshot
        await _plan_and_apply(
            settings, outcome, metrics, reader, target, rules, built, actual,
            policy_from(settings, now, force=force), stop,
        )


@contextlib.asynccontextmanager
async def _connections(
    settings: Settings, metrics: Metrics, outcome: RunOutcome
) -> AsyncIterator[tuple[KeycloakReader, LiteLLMClient]]:
    """One run's clients of both sides (requests counted on `outcome`), closed
    however the run ends."""
    keycloak_api, litellm_api = _clients(settings, metrics, outcome.requests)
    tokens = TokenProvider(settings.keycloak)
    try:
        yield _reader(settings, keycloak_api, tokens), _target(settings, litellm_api)
    finally:
        await asyncio.gather(keycloak_api.aclose(), litellm_api.aclose(), tokens.aclose())


async def _plan_and_apply(
    settings: Settings,
    outcome: RunOutcome,
    metrics: Metrics,
    reader: KeycloakReader,
    target: LiteLLMClient,
    rules: Rules,
    built: Built,
    actual: Actual,
    policy: Policy,
    stop: asyncio.Event | None,
) -> None:
    """Plan (within ``outcome.scope``, if any) and write: the part a full
    reconcile and a fast-path run share, so they apply the same rules the same way."""
    desired = built.desired
    outcome.desired, outcome.actual = desired, actual
    outcome.read_warnings.extend(built.warnings)
    managed = actual.managed_teams
    if not desired.teams and managed:
        raise SourceReadError(
            f"Keycloak returned no selected groups ({desired.groups_seen} groups in all) "
            f"while {len(managed)} teams are managed; refusing to treat that as everyone "
            "leaving. Check the realm and the selection settings."
        )
    plan = make_plan(desired, actual, policy, outcome.scope)
    outcome.plan = plan
    if outcome.scope is None:  # these gauges describe the whole state
        metrics.pending_changes.set(len(plan.operations) + len(plan.held_back))
        metrics.unresolved_identities.set(plan.unresolved_identities)
    if outcome.mode != "apply":  # dry run and check write nothing
        return
    applier = Applier(target, stop, in_flight=settings.litellm.concurrency)
    outcome.applied = applier.result
    # Everything that only adds or restores first; then, just before the
    # destructive part, a fresh read of each of its subjects.
    await applier.apply([op for op in plan.operations if not op.DESTRUCTIVE])
    destructive = [op for op in plan.operations if op.DESTRUCTIVE]
    if applier.stopped:
        applier.result.not_started += len(destructive)
        raise RunInterrupted("stopped")
    if destructive:
        facts = SourceFacts(desired.sources, desired.groups_known)
        confirmer = Confirmer(reader, facts, rules)
        confirmed, dropped = await confirmer.confirm(destructive)
        outcome.confirm_reads = confirmer.reads
        plan = with_unconfirmed(plan, dropped)
        outcome.plan = plan
        for op, _ in dropped:
            metrics.unconfirmed.labels(operation=op.KIND).inc()
        if dropped:
            outcome.apply_warnings.append(
                f"{len(dropped)} destructive change(s) skipped this run: a fresh read of "
                "Keycloak did not confirm them (see change_unconfirmed events)"
            )
        await applier.apply(confirmed)
        if applier.stopped:
            raise RunInterrupted("stopped")
    applied = applier.result
    outcome.apply_warnings.extend(applied.warnings)
    if plan.braked:
        log.warning(
            "safety_brake_engaged", reason=plan.brake_reason, held_back=len(plan.held_back),
            failed=len(applied.failed),
        )
        for op in plan.held_back:
            log.warning("held_back", op=op.KIND, **op.ids())
    if applied.config_error is not None:
        # Everything else was applied; the run still ends in this one error.
        raise ConfigRefused(applied.config_error)


async def run_fast(
    settings: Settings,
    base: SourceSnapshot,
    hints: Hints,
    *,
    metrics: Metrics,
    now: datetime | None = None,
) -> RunOutcome:
    """A fast-path run (the daemon's event tail): re-read what `hints` name,
    fold it into `base` (the last snapshot), and plan and apply for those
    subjects only, exactly as a full reconcile would for them now.

    Never raises for expected failures; ``outcome.snapshot`` is the patched
    snapshot when the reads succeeded (the daemon keeps it for the next batch).
    """
    run_id = uuid.uuid4().hex[:12]
    structlog.contextvars.bind_contextvars(run_id=run_id)
    outcome = RunOutcome(run_id=run_id, mode="apply")
    started = time.perf_counter()
    try:
        log.info("fast_path_started", users=len(hints.users), groups=len(hints.groups),
                 events=hints.events)
        try:
            await _fast_reconcile(settings, outcome, metrics, base, hints, now or datetime.now(UTC))
        except Exception as exc:  # expected (SyncdError) or a bug: keep the daemon alive
            _failed(outcome, metrics, exc, "fast_path")
        outcome.duration = time.perf_counter() - started
        _record_changes(metrics, outcome)
        metrics.fast_runs.labels(result=outcome.result.value).inc()
        stats = outcome.stats
        log.info("fast_path_finished", summary=stats.summary, events=hints.events,
                 **stats.as_dict())
    finally:
        structlog.contextvars.unbind_contextvars("run_id")
    return outcome


async def _fast_reconcile(
    settings: Settings,
    outcome: RunOutcome,
    metrics: Metrics,
    base: SourceSnapshot,
    hints: Hints,
    now: datetime,
) -> None:
    rules = rules_from(settings)
    async with _connections(settings, metrics, outcome) as (reader, target):
        source = _fast_source(reader, rules, base, hints, outcome)
        snapshot, built, actual = await _read_both(source, target)
        outcome.snapshot = snapshot
        await _plan_and_apply(
            settings, outcome, metrics, reader, target, rules, built, actual,
            policy_from(settings, now), None,
        )


async def _fast_source(
    reader: KeycloakReader,
    rules: Rules,
    base: SourceSnapshot,
    hints: Hints,
    outcome: RunOutcome,
) -> tuple[SourceSnapshot, Built]:
    """Fresh reads of the hinted users (record and direct groups) and, when a
    group changed or a user is in a group the snapshot never saw, of the group
    tree and the members of groups that now feed a team."""
    fresh = await all_or_nothing(_fresh_user(reader, u) for u in sorted(hints.users))
    tree = await reader.read_groups() if hints.groups else None
    if tree is None and unknown_groups(base, fresh):
        tree = await reader.read_groups()
    members: dict[str, list[Member]] = {}
    if tree is not None:
        wanted = missing_members(base, rules, tree) | (hints.groups & groups_to_read(tree, rules))
        ids = sorted(wanted)
        lists = await all_or_nothing(reader.read_members(g) for g in ids)
        members = dict(zip(ids, lists, strict=True))
    snapshot = patch(base, rules, fresh=fresh, tree=tree, members=members)
    old, new = build(base, rules), build(snapshot, rules)
    outcome.scope = scope_of(hints.users, hints.groups, base, old.desired, new.desired)
    return snapshot, new


async def _fresh_user(reader: KeycloakReader, user_id: str) -> FreshUser:
    record = await reader.read_user(user_id)
    if record is None:
        return FreshUser(user_id, None, frozenset())
    groups = await reader.read_user_groups(user_id)
    return FreshUser(
        user_id, member_of(record), frozenset(str(g["id"]) for g in groups if "id" in g)
    )


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event | None) -> T:
    """Await `work` (the reads) unless `stop` is set first: then abandon it and raise
    RunInterrupted. Nothing has been written yet, so there is nothing to wait for."""
    if stop is None:
        return await work
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


def _interrupted(outcome: RunOutcome) -> RunInterrupted:
    """The stop that ended `outcome`: what reached LiteLLM is counted, not lost."""
    applied = outcome.applied
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
    source: Coroutine[Any, Any, tuple[SourceSnapshot, Built]], target: LiteLLMClient
) -> tuple[SourceSnapshot, Built, Actual]:
    """Read both sides at once; the first failure cancels the other read."""
    try:
        async with asyncio.TaskGroup() as group:
            desired_task = group.create_task(source)
            actual_task = group.create_task(_read_target(target))
    except ExceptionGroup as group_error:
        errors = group_error.exceptions
        # Report the Keycloak side first: it decides whether anything may be written.
        first = next((e for e in errors if isinstance(e, SourceReadError)), errors[0])
        raise first from None
    return (*desired_task.result(), actual_task.result())


async def _read_source(reader: KeycloakReader, rules: Rules) -> tuple[SourceSnapshot, Built]:
    """Keycloak as it is, then what it asks for (the build is pure and quick)."""
    snapshot = await reader.read_snapshot(rules)
    return snapshot, build(snapshot, rules)


async def _read_target(target: LiteLLMClient) -> Actual:
    """Who syncd's key acts as (refusing a key that cannot administer), then LiteLLM.

    The key's own user is carried in ``Actual.service_user_id`` so the planner
    never removes, blocks or counts it.
    """
    owner = await target.whoami()
    log.info(
        "litellm_identity", user_id=owner.user_id, role=owner.role, master_key=owner.master,
        key_alias=owner.key_alias, expires=owner.expires,
    )
    if owner.master:
        log.warning(
            "litellm_master_key_in_use",
            hint="run syncd on a dedicated proxy_admin key (docs/deploy.md)",
        )
    actual = await target.read()
    return replace(actual, service_user_id=owner.user_id)


def _record(metrics: Metrics, outcome: RunOutcome) -> None:
    now = time.time()
    result = outcome.result
    metrics.runs.labels(result=result.value).inc()
    metrics.run_duration.observe(outcome.duration)
    metrics.last_run.set(now)
    if result is RunResult.SUCCESS:
        metrics.last_success.set(now)
        metrics.consecutive_failures.set(0)
    elif result.failed:
        metrics.consecutive_failures.inc()
    _record_changes(metrics, outcome)
    if outcome.plan is not None:
        metrics.brake_engaged.set(1 if outcome.plan.braked else 0)
        metrics.held_back.set(len(outcome.plan.held_back))
    if outcome.desired is not None and outcome.plan is not None:
        skipped = {s.team_id for s in outcome.plan.skipped}
        teams = [t for tid, t in outcome.desired.teams.items() if tid not in skipped]
        metrics.managed_teams.set(len(teams))
        metrics.managed_members.set(sum(len(t.members) for t in teams))


def _record_changes(metrics: Metrics, outcome: RunOutcome) -> None:
    """What was written and what failed: counted alike for full and fast-path runs."""
    if outcome.applied:
        for op in outcome.applied.done:
            metrics.changes.labels(operation=op.KIND).inc()
        for op, _ in outcome.applied.failed:
            metrics.operation_failures.labels(operation=op.KIND).inc()
        if outcome.applied.failed:
            metrics.errors.labels(stage="apply").inc()
