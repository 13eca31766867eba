"""No secret reaches any output: stdout, stderr (JSON logs), --json, pushed metrics.

Real faults that carry secrets back to syncd: an HTML 500 page (LiteLLM's, or
an ingress's in front of Keycloak) that echoes the request headers, so
``Authorization: Bearer <key or token>`` is in the body; a token endpoint whose
error page echoes the form body (``client_secret=...``); a wrong client secret;
TLS failures. For each, every stream syncd writes is searched for the LiteLLM
key, the Keycloak client secret, and every token Keycloak issued (and their
first characters), and the error still says what happened.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import Result, Syncd

CLIENT_SECRET = f"kc-secret-{uuid.uuid4().hex}"  # matches no pattern: masked by value only


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    return realm_factory(
        groups={"/llm/a": {}, "/llm/b": {}},
        users=[User("ann", "ann@example.com", groups=["/llm/a"]),
               User("bob", "bob@example.com", groups=["/llm/b"])],
        client_secret=CLIENT_SECRET,
    )


# --------------------------------------------------------------------------- helpers


@dataclass
class Ingress:
    """A real HTTP hop in front of Keycloak (an ingress or auth proxy) on loopback.

    It forwards to Keycloak, except that paths matching `fail` get a 500 HTML
    page echoing the request line, headers and body, as misconfigured ingress
    and debug error pages do. Every Authorization header it sees is kept, so
    the test knows the exact tokens syncd held.
    """

    upstream: str
    fail: re.Pattern[str]
    url: str = ""
    seen_tokens: list[str] = field(default_factory=list)


def _ingress_handler(ingress: Ingress) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            auth = self.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                ingress.seen_tokens.append(auth.split(" ", 1)[1])
            if ingress.fail.search(self.path):
                echo = "\n".join(
                    [f"{self.command} {self.path}"]
                    + [f"{k}: {v}" for k, v in self.headers.items()]
                    + ["", body.decode("latin-1")]
                )
                page = (f"<html><body><h1>500 Internal Server Error</h1><pre>"
                        f"{escape(echo)}</pre></body></html>").encode()
                self._reply(500, page, "text/html")
                return
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "content-length", "connection")}
            up = httpx.request(self.command, ingress.upstream + self.path, content=body,
                               headers=headers, timeout=30)
            self._reply(up.status_code, up.content,
                        up.headers.get("content-type", "application/octet-stream"))

        def _reply(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def ingress_factory() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(upstream: str, fail: str) -> Ingress:
        ingress = Ingress(upstream=upstream, fail=re.compile(fail))
        server = ThreadingHTTPServer(("127.0.0.1", 0), _ingress_handler(ingress))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        ingress.url = f"http://127.0.0.1:{server.server_address[1]}"
        return ingress

    yield start
    for server in servers:
        server.shutdown()


class _Gateway(BaseHTTPRequestHandler):
    """Stands in for the Pushgateway: keeps every pushed metrics body."""

    pushed: ClassVar[list[str]] = []

    def do_PUT(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        type(self).pushed.append(self.rfile.read(length).decode("utf-8", "replace"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[type[_Gateway]]:
    handler = type("Gateway", (_Gateway,), {"pushed": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()


def syncd_for(realm: KeycloakRealm, emulator: EmulatorAdmin, tmp: Path,
              gateway: type[_Gateway]) -> Syncd:
    syncd = Syncd(realm, emulator, tmp)
    syncd.config["pushgateway"] = {"url": gateway.url}  # type: ignore[attr-defined]
    return syncd


def runs(syncd: Syncd) -> list[Result]:
    """The same run as an operator would make it, in every output shape."""
    return [
        syncd.run("--once", "--push-metrics"),
        syncd.run("--once", "--json", "--push-metrics"),
        syncd.run("--dry-run"),
        syncd.run("--dry-run", "--json"),
    ]


def assert_clean(results: list[Result], secrets: list[str], pushed: list[str]) -> str:
    """No secret, no prefix of one, no JWT, no bearer value in any stream; returns
    everything searched (for the caller's checks of what *is* said)."""
    blob = "\n".join([*(r.stdout + "\n" + r.stderr for r in results), *pushed])
    for secret in secrets:
        assert secret not in blob
        assert secret[:16] not in blob, f"a prefix of a secret leaked: {secret[:16]}..."
    assert "eyJ" not in blob  # the start of every JWT (Keycloak's tokens)
    assert not re.search(r"(?i)bearer\s+(?!\[masked\])[A-Za-z0-9]", blob)
    return blob


# --------------------------------------------------------------------------- tests


def test_litellm_html_500_echoing_headers_on_a_read(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path, gateway: type[_Gateway]
) -> None:
    syncd = syncd_for(realm, emulator, tmp_path, gateway)
    emulator.set_faults([{"path": "/user/list", "error_rate": 1.0, "error_status": 500,
                          "error_body": "html_echo"}])
    results = runs(syncd)
    assert [r.code for r in results] == [5, 5, 5, 5]
    assert gateway.pushed, "metrics were pushed"
    blob = assert_clean(results, [syncd.api_key, CLIENT_SECRET], gateway.pushed)
    assert "sync_failed" in blob
    error = results[1].json["error"]
    assert re.search(r"HTTP 500: non-JSON body of \d+ bytes, text/html", error), error
    assert "Error: " in results[0].stderr
    assert emulator.audit() == []


def test_litellm_html_500_echoing_headers_on_a_write(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path, gateway: type[_Gateway]
) -> None:
    syncd = syncd_for(realm, emulator, tmp_path, gateway)
    emulator.set_faults([{"path": "/team/new", "method": "POST", "error_rate": 1.0,
                          "error_status": 500, "error_body": "html_echo"}])
    text = syncd.run("--once", "--push-metrics")
    doc = syncd.run("--once", "--json", "--push-metrics")
    assert (text.code, doc.code) == (6, 6), text.stdout
    failed = doc.json["failed"]
    creates = [f["error"] for f in failed if f["op"] == "create_team"]
    assert creates and all(
        e.startswith("/team/new: HTTP 500: non-JSON body of ") and e.endswith("text/html")
        for e in creates
    ), failed
    assert "operation(s) failed" in text.stdout
    blob = assert_clean([text, doc], [syncd.api_key, CLIENT_SECRET], gateway.pushed)
    assert "change_failed" in blob
    assert "syncd_operation_failures_total" in "\n".join(gateway.pushed)


def test_ingress_500_in_front_of_keycloak_echoing_the_token(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path, gateway: type[_Gateway],
    ingress_factory: Any,
) -> None:
    ingress = ingress_factory(realm.url, r"^/admin/")
    syncd = syncd_for(realm, emulator, tmp_path, gateway)
    syncd.config["keycloak"]["url"] = ingress.url
    results = runs(syncd)
    assert [r.code for r in results] == [4, 4, 4, 4]
    assert ingress.seen_tokens, "syncd sent its token through the ingress"
    blob = assert_clean(results, [*set(ingress.seen_tokens), syncd.api_key, CLIENT_SECRET],
                        gateway.pushed)
    assert "non-JSON body" in blob
    assert emulator.audit() == []


def test_token_endpoint_error_echoing_the_client_secret(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path, gateway: type[_Gateway],
    ingress_factory: Any,
) -> None:
    ingress = ingress_factory(realm.url, r"/protocol/openid-connect/token")
    syncd = syncd_for(realm, emulator, tmp_path, gateway)
    syncd.config["keycloak"]["url"] = ingress.url
    results = runs(syncd)
    assert [r.code for r in results] == [4, 4, 4, 4]
    blob = assert_clean(results, [syncd.api_key, CLIENT_SECRET], gateway.pushed)
    assert "token request" in blob and "HTTP 500" in blob


def test_wrong_client_secret_is_not_repeated(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path, gateway: type[_Gateway]
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    syncd = syncd_for(realm, emulator, tmp_path, gateway)
    syncd.env["SYNCD_KEYCLOAK__CLIENT_SECRET"] = wrong
    results = runs(syncd)
    assert [r.code for r in results] == [4, 4, 4, 4]
    blob = assert_clean(results, [wrong, syncd.api_key, CLIENT_SECRET], gateway.pushed)
    assert "authentication refused" in blob


@pytest.mark.parametrize("side", ["keycloak", "litellm"])
def test_tls_failure(
    side: str, realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path,
    gateway: type[_Gateway],
) -> None:
    syncd = syncd_for(realm, emulator, tmp_path, gateway)
    syncd.config[side]["url"] = syncd.config[side]["url"].replace("http://", "https://")
    results = runs(syncd)
    expected = 4 if side == "keycloak" else 5
    assert [r.code for r in results] == [expected] * 4
    blob = assert_clean(results, [syncd.api_key, CLIENT_SECRET], gateway.pushed)
    assert "TLS" in blob


def test_a_clean_run_says_nothing_secret_either(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path, gateway: type[_Gateway],
    ingress_factory: Any,
) -> None:
    ingress = ingress_factory(realm.url, r"^$")  # forwards everything
    syncd = syncd_for(realm, emulator, tmp_path, gateway)
    syncd.config["keycloak"]["url"] = ingress.url
    results = [syncd.run("--dry-run", "--json"), syncd.run("--once", "--json", "--push-metrics")]
    assert [r.code for r in results] == [0, 0]
    assert_clean(results, [*set(ingress.seen_tokens), syncd.api_key, CLIENT_SECRET],
                 gateway.pushed)
