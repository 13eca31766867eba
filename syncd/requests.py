"""Reconcile requests and the one queue they wait in.

Everything that wants LiteLLM brought in line (the start, the schedule, the
admin-event tail, a gap in it, an operator) only puts a request here; one
worker (`syncd.service`) takes them one at a time. Two kinds:

- `Full`: read everything on both sides and plan everything.
- `Scoped`: re-read the users and groups admin events named and plan for them.

Pending requests merge, so a burst of events costs one run, not one per
event: scoped requests merge into one; a `Full` covers every scoped request
pending (their events are applied by it) and a second `Full` adds nothing. The
queue holds at most one request of each kind, so it cannot grow.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from syncd.events import Hints


@dataclass(frozen=True)
class Full:
    """Read and plan everything. `hints` are the events it covers, for the
    propagation metrics (none for a scheduled run)."""

    reason: str
    hints: Hints = field(default_factory=Hints)


@dataclass(frozen=True)
class Scoped:
    """Re-read and plan only what `hints` name (users, groups)."""

    hints: Hints


ReconcileRequest = Full | Scoped


class RequestQueue:
    """At most one pending `Full` and one pending `Scoped`; a `Full` wins."""

    def __init__(self) -> None:
        self._full: Full | None = None
        self._scoped: Hints | None = None
        self._ready = asyncio.Event()

    @property
    def full_pending(self) -> bool:
        return self._full is not None

    @property
    def empty(self) -> bool:
        return self._full is None and self._scoped is None

    def put_full(self, reason: str, hints: Hints | None = None) -> bool:
        """Ask for a full reconcile; False when one was pending already."""
        merged = Hints()
        for more in (self._full.hints if self._full else None, self._scoped, hints):
            if more is not None:
                merged.merge(more)
        first = self._full is None
        self._full = Full(self._full.reason if self._full else reason, merged)
        self._scoped = None
        self._ready.set()
        return first

    def put_scoped(self, hints: Hints) -> None:
        """Ask for the subjects `hints` name to be reconciled."""
        if self._full is not None:  # the full run will see them; keep the stamps
            self._full.hints.merge(hints)
            return
        if self._scoped is None:
            self._scoped = Hints()
        self._scoped.merge(hints)
        self._ready.set()

    def take(self) -> ReconcileRequest | None:
        """The next request without waiting, or None."""
        if self._full is not None:
            request: ReconcileRequest = self._full
        elif self._scoped is not None:
            request = Scoped(self._scoped)
        else:
            return None
        self._full, self._scoped = None, None
        self._ready.clear()
        return request

    async def get(self) -> ReconcileRequest:
        """The next request, waiting for one."""
        while True:
            request = self.take()
            if request is not None:
                return request
            await self._ready.wait()
