"""Failures on either side: clear errors, the right exit code, and nothing written."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import Syncd, members, teams


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    return realm_factory(
        groups={"/llm/a": {}, "/llm/a/sub": {}, "/ds": {"litellm.sync": "true"}, "/x": {}},
        users=[User("ann", "ann@example.com", groups=["/llm/a"]),
               User("sam", "sam@example.com", groups=["/llm/a/sub"]),
               User("dee", "dee@example.com", groups=["/ds"])],
    )


class _Garbage(BaseHTTPRequestHandler):
    """A real HTTP peer that answers every GET with 200 and a body of the wrong shape."""

    body = b'{"teams": "not a list", "total_pages": 1}'

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def do_POST(self) -> None:
        self.do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def garbage_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_litellm_wrong_key_exits_5_without_writes(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    syncd = Syncd(realm, emulator, tmp_path)
    result = syncd.once(env={"SYNCD_LITELLM__API_KEY": "sk-wrong-key-123"})
    assert result.code == 5, result.stdout
    assert "401" in result.json["error"] and "litellm.api_key" in result.json["error"]
    assert "sk-wrong-key-123" not in result.stdout + result.stderr
    assert emulator.audit() == []


def test_malformed_litellm_reply_exits_5(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path, garbage_server: str
) -> None:
    syncd = Syncd(realm, emulator, tmp_path)
    syncd.config["litellm"]["url"] = garbage_server
    result = syncd.once()
    assert result.code == 5
    assert "is not a" in result.json["error"]  # the first malformed reply (/key/info)


def test_malformed_keycloak_reply_exits_4_without_writes(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path, garbage_server: str
) -> None:
    syncd = Syncd(realm, emulator, tmp_path)
    syncd.config["keycloak"]["url"] = garbage_server
    result = syncd.once()
    assert result.code == 4
    assert emulator.audit() == []


def test_tls_error_is_named(realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path) -> None:
    syncd = Syncd(realm, emulator, tmp_path)
    syncd.config["keycloak"]["url"] = realm.url.replace("http://", "https://")
    result = syncd.once()
    assert result.code == 4
    assert "TLS" in result.json["error"]
    assert emulator.audit() == []


def test_attribute_selection_and_flatten(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    syncd = Syncd(realm, emulator, tmp_path, selection={"flatten": True})
    assert syncd.once().code == 0
    got = teams(emulator)
    uid = realm.user_ids()
    assert members(got[realm.group_id("/llm/a")]) == {uid["ann"]: "user", uid["sam"]: "user"}
    assert members(got[realm.group_id("/llm/a/sub")]) == {uid["sam"]: "user"}
    assert members(got[realm.group_id("/ds")]) == {uid["dee"]: "user"}  # by attribute
    assert realm.group_id("/x") not in got
    # flatten off again: sam leaves the parent team only
    syncd.config["selection"]["flatten"] = False
    # one person leaves one team: a small organisation needs no --force for that
    assert syncd.once().code == 0
    assert members(teams(emulator)[realm.group_id("/llm/a")]) == {uid["ann"]: "user"}


def test_query_groups_role_alone_is_a_read_failure_not_an_empty_realm(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    """Keycloak answers GET /groups with [] for this role; syncd must not believe it."""
    realm = realm_factory(groups=["/llm/a"], users=[User("ann", groups=["/llm/a"])],
                          service_account_roles=("query-groups",))
    result = Syncd(realm, emulator, tmp_path).once()
    assert result.code == 4, result.stdout
    assert "view-users" in result.json["error"]
    assert emulator.audit() == []
