"""Keycloak fixtures for these tests until tests/conftest.py registers them globally."""

from tests.fixtures.keycloak import *  # noqa: F403
