"""Benchmark smoke tests (the small sizes of bench/)."""

from __future__ import annotations

import os

import pytest

from devtools.keycloak_local import KeycloakUnavailableError, ensure_distribution, find_java


def keycloak_or_skip() -> None:
    """A real Keycloak can be had: fail under CI (a broken environment must not
    pass as green), skip elsewhere."""
    try:
        find_java()
        ensure_distribution()
    except KeycloakUnavailableError as exc:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"real Keycloak unavailable: {exc}", pytrace=False)
        pytest.skip(f"real Keycloak unavailable: {exc}")
