"""Command line: arguments, exit codes, wiring. No HTTP here.

    syncd [--config FILE]                      run as a daemon (scheduled syncs)
    syncd --once [--dry-run | --check] [--json] [--force] [--push-metrics]
    syncd validate [--config FILE]             check the configuration and exit
    syncd sync --user SUBJECT | --group PATH [--force] [--json]
                                               apply one subject's plan now
    syncd explain SUBJECT | --group PATH [--json]  why (no) access; what happens next
    syncd doctor [--json]                      check the set-up, read-only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, TextIO

import structlog

from syncd import __version__
from syncd.config import Settings, load_settings
from syncd.doctor import Check, diagnose
from syncd.doctor import exit_code as doctor_exit
from syncd.doctor import render as render_doctor
from syncd.errors import ConfigError, ExitCode, SyncdError
from syncd.explain import explain
from syncd.explain import render as render_explanation
from syncd.http import RequestCounter
from syncd.logs import configure
from syncd.metrics import Metrics, push_metrics
from syncd.ondemand import GroupSubject, UserSubject, resolve_group, resolve_user, sync_subject
from syncd.reconciler import Clients, Mode, Reconciler, RunReport
from syncd.report import plan_json, render_plan
from syncd.requests import Full
from syncd.secrets import Secrets, mask

log = structlog.get_logger("syncd.cli")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncd",
        description="Make Keycloak groups the source of truth for LiteLLM teams.",
        epilog="Exit codes: 0 ok, 1 drift (--check), 2 usage, 3 configuration, "
        "4 Keycloak read failed, 5 LiteLLM read failed, 6 partial apply, "
        "7 safety brake engaged, 8 LiteLLM refused the configuration (enterprise_license), "
        "9 someone left without a LiteLLM user (identity), 10 internal error, "
        "143 --once stopped by SIGTERM/SIGINT. "
        "doctor: 0 all checks pass, 1 warnings, 2 a failure.",
    )
    p.add_argument("command", nargs="?", choices=("run", "validate", "sync", "explain", "doctor"),
                   default="run",
                   help="run (default); validate the configuration only; "
                   "sync one --user or --group now; explain SUBJECT (or --group PATH); "
                   "doctor: check the set-up (read-only)")
    p.add_argument("subject", nargs="?",
                   help="explain: a Keycloak username, email or id, or a LiteLLM user id")
    p.add_argument("--user", metavar="SUBJECT",
                   help="sync: a Keycloak username, email or id, or a LiteLLM user id")
    p.add_argument("--group", metavar="PATH", help="sync: a Keycloak group path (or id)")
    p.add_argument("-c", "--config", help="YAML configuration file (default: $SYNCD_CONFIG)")
    p.add_argument("--once", action="store_true", help="run one sync and exit (for cron)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="print the plan, write nothing (implies --once)")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if there is drift, write nothing (implies --once)")
    p.add_argument("--json", action="store_true", help="print the plan and summary as JSON")
    p.add_argument("--force", action="store_true",
                   help="lift the safety brake for this run")
    p.add_argument("--push-metrics", action="store_true",
                   help="--once: push run metrics to pushgateway.url")
    p.add_argument("--version", action="version", version=f"syncd {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(mask(f"syncd: {exc}"), file=sys.stderr)
        return ExitCode.CONFIG
    # Known from now on, so that no output (logs, errors, stdout) can repeat them.
    Secrets.add(settings.keycloak.secret())
    Secrets.add(settings.litellm.key())
    configure(settings.logging.level, settings.logging.format)
    if args.command == "validate":
        print("configuration is valid")
        return ExitCode.OK
    if args.command == "sync":
        if (args.user is None) == (args.group is None):
            print("syncd: sync needs exactly one of --user SUBJECT or --group PATH",
                  file=sys.stderr)
            return ExitCode.USAGE
        return sync_one(settings, user=args.user, group=args.group, force=args.force,
                        as_json=args.json)
    if args.command == "doctor":
        return doctor_one(settings, as_json=args.json)
    if args.command == "explain":
        user = args.subject or args.user
        if (user is None) == (args.group is None):
            print("syncd: explain needs a SUBJECT (user) or --group PATH", file=sys.stderr)
            return ExitCode.USAGE
        return explain_one(settings, user=user, group=args.group, as_json=args.json)
    if args.once or args.dry_run or args.check:
        mode: Mode = "dry-run" if args.dry_run else "check" if args.check else "apply"
        return run_once(settings, mode, force=args.force, as_json=args.json,
                        push=args.push_metrics)
    from syncd.service import serve  # the daemon's imports are not needed for --once

    return serve(settings)


def run_once(settings: Settings, mode: Mode, *, force: bool, as_json: bool, push: bool) -> int:
    metrics = Metrics()
    outcome = asyncio.run(_once_until_signalled(settings, mode, force, metrics))
    print_outcome(outcome, as_json=as_json)
    if push and mode == "apply":
        push_metrics(settings, metrics)
    return int(outcome.exit_code)


async def _once_until_signalled(
    settings: Settings, mode: Mode, force: bool, metrics: Metrics
) -> RunReport:
    """One run that a SIGTERM/SIGINT ends honestly instead of killing mid-write.

    First signal: reads are abandoned, no new write starts, writes in flight
    finish (each is bounded by litellm.timeout_seconds and the retry policy), and
    the summary counts what reached LiteLLM; exit 143. A second signal cancels
    the writes in flight too (they are counted as cut off). A cron pod that is
    being replaced thus leaves a summary an on-call engineer can trust.
    """
    async with _stopped_by_signals() as stop:
        clients = Clients(settings, metrics)
        reconciler = Reconciler(settings, clients, metrics, keep_view=False)
        try:
            return await reconciler.run(Full("--once"), mode=mode, force=force, stop=stop)
        finally:
            await clients.aclose()


@contextlib.asynccontextmanager
async def _stopped_by_signals() -> AsyncIterator[asyncio.Event]:
    """The stop event a SIGTERM/SIGINT sets (the run then starts no new write);
    a second signal cancels the task, cutting off the writes in flight."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.warning("stop_requested", signal=sig.name,
                        detail="no new write starts; writes in flight finish; "
                        "a second signal cancels them")
            stop.set()
        elif task is not None:
            log.warning("stop_forced", signal=sig.name)
            task.cancel()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def doctor_one(settings: Settings, *, as_json: bool) -> int:
    """``syncd doctor``: one line per check; exit 0 all pass, 1 warnings, 2 a failure."""
    checks = asyncio.run(_doctor(settings))
    if as_json:
        _print(json.dumps({"checks": [c.as_dict() for c in checks],
                           "exit_code": doctor_exit(checks)}, indent=2))
    else:
        _print(render_doctor(checks))
    return doctor_exit(checks)


async def _doctor(settings: Settings) -> list[Check]:
    metrics = Metrics()
    clients = Clients(settings, metrics)
    try:
        return await diagnose(Reconciler(settings, clients, metrics, keep_view=True))
    finally:
        await clients.aclose()


def explain_one(settings: Settings, *, user: str | None, group: str | None,
                as_json: bool) -> int:
    """``syncd explain``: read-only, one subject's facts and next steps."""
    outcome = asyncio.run(_explain(settings, user, group))
    if isinstance(outcome, SyncdError):
        _print(f"syncd: {outcome}", file=sys.stderr)
        return int(outcome.exit_code)
    if as_json:
        _print(json.dumps(Secrets.mask_data(outcome), indent=2, sort_keys=True, default=str))
    else:
        _print(render_explanation(outcome))
    return ExitCode.OK


async def _explain(settings: Settings, user: str | None,
                   group: str | None) -> dict[str, Any] | SyncdError:
    metrics = Metrics()
    clients = Clients(settings, metrics)
    reconciler = Reconciler(settings, clients, metrics, keep_view=True)
    try:
        return await explain(reconciler, user=user, group=group)
    except SyncdError as exc:
        return exc
    finally:
        await clients.aclose()


def sync_one(settings: Settings, *, user: str | None, group: str | None, force: bool,
             as_json: bool) -> int:
    """``syncd sync --user/--group``: one subject's plan applied now (a scoped
    request over a fresh read of both sides), printed as ``--once`` prints a run."""
    metrics = Metrics()
    outcome = asyncio.run(_sync_until_signalled(settings, user, group, force, metrics))
    if isinstance(outcome, SyncdError):
        _print(f"syncd: {outcome}", file=sys.stderr)
        return int(outcome.exit_code)
    subject, report, observed = outcome
    if not as_json:
        _print(f"sync {subject.label}: scoped run over {_scope_text(report)} (after reading "
               f"both sides whole: requests keycloak={observed.total('keycloak')} "
               f"litellm={observed.total('litellm')})")
    print_outcome(report, as_json=as_json)
    return int(report.exit_code)


def _scope_text(report: RunReport) -> str:
    scope = report.scope
    if scope is None:
        return "everything (no kept state)"
    return f"{len(scope.users)} user(s), {len(scope.teams)} team(s)"


async def _sync_until_signalled(
    settings: Settings, user: str | None, group: str | None, force: bool, metrics: Metrics
) -> tuple[UserSubject | GroupSubject, RunReport, RequestCounter] | SyncdError:
    """Read both sides, find the subject, run its scoped request; a signal stops
    it as it stops ``--once``. A failed read or an unknown subject is returned,
    not raised: nothing was written."""
    async with _stopped_by_signals() as stop:
        clients = Clients(settings, metrics)
        reconciler = Reconciler(settings, clients, metrics, keep_view=True)
        try:
            observed = await reconciler.observe()
            subject: UserSubject | GroupSubject = (
                await resolve_user(reconciler, user) if user is not None
                else resolve_group(reconciler, group or "")
            )
            report = await sync_subject(reconciler, subject, force=force, stop=stop)
        except SyncdError as exc:
            return exc
        finally:
            await clients.aclose()
        return subject, report, observed


def _print(*parts: object, file: TextIO | None = None) -> None:
    """print, with every secret masked (syncd.secrets): plan lines, errors and the
    summary may carry text a server sent."""
    print(mask(" ".join(str(p) for p in parts)), file=file or sys.stdout)


def print_outcome(outcome: RunReport, *, as_json: bool) -> None:
    names, stats = outcome.names, outcome.stats
    if as_json:
        doc = {
            "run_id": outcome.run_id,
            "result": outcome.result.value,
            "exit_code": int(outcome.exit_code),
            "error": outcome.error,
            "summary": stats.as_dict(),
            "plan": plan_json(outcome.plan, names) if outcome.plan is not None else None,
            "failed": [
                {"op": op.KIND, "error": err} for op, err in
                (outcome.applied.failed if outcome.applied else [])
            ],
            "warnings": outcome.warnings,
        }
        # Masked as data (strings as they are) and once more as text (values that
        # only become strings in the dump).
        text = json.dumps(Secrets.mask_data(doc), indent=2, sort_keys=True, default=str)
        _print(text)
        return
    if outcome.plan is not None:
        _print(render_plan(outcome.plan, names))
    if outcome.applied and outcome.applied.failed:
        _print(f"\n{len(outcome.applied.failed)} operation(s) failed:")
        for op, err in outcome.applied.failed:
            _print(f"  {op.KIND}: {err}")
    for w in outcome.run_warnings:  # render_plan printed the plan's own
        _print(f"Warning: {w}")
    if outcome.error:
        _print(f"\nError: {outcome.error}", file=sys.stderr)
    _print(stats.summary)


if __name__ == "__main__":
    sys.exit(main())
