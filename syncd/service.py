"""The long-running daemon (issue 5): scheduler, /metrics, /healthz, /readyz, signals.

Placeholder until the daemon lands: `syncd --once` is the supported mode.
"""

from __future__ import annotations

from syncd.config import Settings
from syncd.metrics import Metrics


def serve(settings: Settings) -> int:
    raise NotImplementedError("daemon mode is not implemented yet; use syncd --once")


def push_metrics(settings: Settings, metrics: Metrics) -> None:
    raise NotImplementedError("pushgateway support is not implemented yet")
