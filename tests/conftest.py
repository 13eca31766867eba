"""Fixtures shared by every test folder: one real Keycloak and one emulator per session."""

pytest_plugins = ["tests.fixtures.keycloak", "tests.fixtures.emulator"]
