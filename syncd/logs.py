"""structlog set-up: JSON lines when not on a terminal, readable text on one.

Every event of a run carries `run_id` (bound with contextvars by the runner).
Settings hold secrets as SecretStr and the clients never log headers or
bodies, but server text (an error page echoing ``Authorization``) can still
reach an event: `_mask` masks every registered secret value and secret
pattern (syncd.secrets) in each field, and `_mask_rendered` once more in the
rendered line (objects rendered by repr). `_redact` blanks fields whose name
says secret.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from syncd.secrets import Secrets

_SECRET_FIELDS = frozenset(
    {"client_secret", "api_key", "authorization", "token", "key", "password", "access_token"}
)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        if name.lower() in _SECRET_FIELDS:
            event[name] = "[redacted]"
    return event


def _mask(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in list(event.items()):
        event[name] = Secrets.mask_data(value)
    return event


def _mask_rendered(_: Any, __: str, line: Any) -> Any:
    return Secrets.mask(line) if isinstance(line, str) else line


class _ToStructlog(logging.Handler):
    """Libraries log through the stdlib; without this, their warnings would reach
    stderr as plain text between the JSON lines (Python's last-resort handler),
    past the mask."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger("syncd.library").log(
                record.levelno,
                "library_log",
                source=record.name,
                message=record.getMessage(),
                **({"exc_info": record.exc_info} if record.exc_info else {}),
            )
        except Exception:  # logging must never take syncd down
            self.handleError(record)


def _route_library_logs() -> None:
    root = logging.getLogger()
    if not root.handlers:  # leave a logging set-up made elsewhere alone
        root.addHandler(_ToStructlog(level=logging.WARNING))


def configure(level: str = "info", fmt: str = "auto") -> None:
    """structlog for syncd's own events, and the stdlib's (libraries') routed into
    it, in the daemon and in ``--once`` alike, so both go through the mask."""
    _route_library_logs()
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            _mask,
            renderer,
            _mask_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
