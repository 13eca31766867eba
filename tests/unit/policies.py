"""Planner policies for unit tests, from the configuration's own defaults.

`Policy` has no defaults of its own (the configuration owns them), so tests
start from what an empty configuration means and override what they test.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from syncd.config import Settings
from syncd.plan import Policy
from syncd.reconciler import policy_from

DEFAULTS = Settings(
    keycloak={"url": "http://keycloak.test", "realm": "r", "client_id": "syncd",
              "client_secret": "unused"},
    litellm={"url": "http://litellm.test", "api_key": "unused"},
)


def policy_at(now: datetime, **overrides: Any) -> Policy:
    """The default policy at `now`, with `overrides` (Policy field names)."""
    return replace(policy_from(DEFAULTS, now), **overrides)
