"""One exception hierarchy, each class carrying its process exit code, and how a
run ends (`RunResult`).

A run's exit code is decided in one function, `syncd.reconciler.RunReport.exit_code`:
the `exit_code` of the error that ended the run when there is one, otherwise
what the plan and the writes say (drift, brake, partial, warnings). `cli.py`
returns that code as it is, and maps only the errors raised before a run starts
(configuration) itself, so the codes that operators script against (cron
wrappers, CI check jobs, alerts) cannot drift between commands.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Process exit codes; documented in README.md ("Exit codes")."""

    OK = 0
    DRIFT = 1  # --check found changes to make
    USAGE = 2  # argparse's own code for bad flags
    CONFIG = 3  # configuration invalid; nothing was contacted
    SOURCE = 4  # reading Keycloak failed; nothing was written
    TARGET = 5  # reading LiteLLM failed; nothing was written
    PARTIAL = 6  # some operations failed, the rest were applied
    BRAKE = 7  # safety brake held destructive operations back
    REFUSED = 8  # the proxy refused what the configuration asks for (enterprise_license)
    WARNINGS = 9  # done with warnings: identity collisions left some users out (syncd.identity)
    INTERNAL = 10  # a bug: unexpected exception
    INTERRUPTED = 143  # --once stopped by SIGTERM/SIGINT (128 + 15, as a shell reports it)


class RunResult(StrEnum):
    """How a run ended; the values are the ``result`` label of ``syncd_runs_total``
    and the ``result`` of the ``sync_finished`` event, so they never change."""

    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial"
    BRAKED = "braked"

    @property
    def failed(self) -> bool:
        """Counts towards ``syncd_consecutive_failures`` and readiness. A braked run
        neither fails nor succeeds: it did its safe part and waits for a person."""
        return self in (RunResult.FAILURE, RunResult.PARTIAL)


class SyncdError(Exception):
    """Base class; `exit_code` says how the process ends and `stage` feeds metrics."""

    exit_code: ExitCode = ExitCode.INTERNAL
    stage: str = "internal"


class ConfigError(SyncdError):
    """Bad configuration: raised before any network call."""

    exit_code = ExitCode.CONFIG
    stage = "config"


class SourceReadError(SyncdError):
    """Keycloak could not be read completely; the run must not write anything.

    `status` is Keycloak's HTTP status when it answered (None for a transport
    failure), so callers decide on it rather than on the message."""

    exit_code = ExitCode.SOURCE
    stage = "keycloak"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EventsUnavailable(SourceReadError):
    """``events.enabled: true`` but the fast path's prerequisites are missing."""


class EventFormatError(SourceReadError):
    """An admin event the tail cannot read: only a full reconcile is safe."""


class TargetReadError(SyncdError):
    """LiteLLM could not be read completely; the run must not write anything."""

    exit_code = ExitCode.TARGET
    stage = "litellm"


class TargetWriteError(SyncdError):
    """One LiteLLM write failed; recorded per operation, the run goes on."""

    exit_code = ExitCode.PARTIAL
    stage = "apply"

    def __init__(self, message: str, *, status: int | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class ConfigRefused(SyncdError):
    """The proxy refuses what the configuration asks for (``enterprise_license``).

    Raised after the rest was applied, so that every run ends in one clear error
    until the configuration is fixed, never in a "partial" that reads like a
    flaky proxy.
    """

    exit_code = ExitCode.REFUSED
    stage = "config"


class UnknownSubject(SyncdError):
    """``syncd sync|explain SUBJECT`` names no one, or more than one: the operator
    is shown who matched and asked to be precise (a usage error, nothing written)."""

    exit_code = ExitCode.USAGE
    stage = "usage"


class RunInterrupted(SyncdError):
    """The run was asked to stop (SIGTERM/SIGINT to ``--once``) before it finished.

    Not an error of either side: the writes made so far stand and are counted,
    the next run plans what is left.
    """

    exit_code = ExitCode.INTERRUPTED
    stage = "interrupted"


class ObjectExists(TargetWriteError):
    """A create met an object with the same id: LiteLLM's 400/409 "already exists",
    or the 500 "Unique constraint failed" of a create that lost a race to another
    (both check-then-insert, so the loser of a race hits the database's constraint).
    The caller decides whether the object is syncd's own (then the create is done)."""


class WriteUncertain(TargetWriteError):
    """A write whose outcome is not known from its answer: a 5xx, a timeout or a
    dropped connection. The proxy may have applied all, part or none of it, so the
    applier re-reads before it retries, and retries a batch in halves.

    ``rolled_back`` is True when the answer says the database transaction did not
    commit (Prisma's expired transaction, or ``no_db_connection``: none started), so
    nothing of it was applied; False means "unknown"."""

    def __init__(
        self, message: str, *, status: int | None = None, kind: str = "",
        rolled_back: bool = False,
    ) -> None:
        super().__init__(message, status=status, kind=kind)
        self.rolled_back = rolled_back


# -- control flow inside one module: never reach the command line --------------


class ConfigFileTooLarge(Exception):
    """The configuration file is over its size cap (config.py turns it into a
    ConfigError naming the file)."""


class EventBurstTooLarge(Exception):
    """More new admin events in one poll than ``events.max_pages`` allow (the
    tail turns it into a gap)."""


class BadHttpRequest(Exception):
    """What a client sent to the metrics port is not an HTTP/1.x request the
    responder understands (answered 400, connection closed)."""
