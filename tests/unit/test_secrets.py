"""Masking by value and by pattern (syncd.secrets), and the error text built on it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import structlog

from syncd import logs
from syncd.http import body_summary, describe_transport_error
from syncd.litellm import error_text
from syncd.secrets import MASK, SecretRegistry, Secrets, cut

SECRET = "kc-client-secret-Zq8w1"  # matches no pattern: only the registry knows it
KEY = "plain-litellm-key-7731"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2lnbmF0dXJlLXBhcnQ"


class _Leaky:
    def __repr__(self) -> str:
        return f"_Leaky({SECRET})"


@pytest.fixture
def registry() -> SecretRegistry:
    reg = SecretRegistry()
    reg.add(SECRET)
    reg.add(KEY)
    return reg


@pytest.fixture
def global_secrets() -> Iterator[SecretRegistry]:
    Secrets.add(SECRET)
    Secrets.add(KEY)
    try:
        yield Secrets
    finally:
        Secrets.clear()


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        (f"secret={SECRET}", SECRET),
        (f"x{KEY}y", KEY),
        (f"Authorization: Bearer {KEY}", KEY),
        ("authorization: Bearer some.opaque.token-value", "some.opaque.token-value"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("the key sk-1234567890abcdef was refused", "sk-1234567890abcdef"),
        (f"token {JWT} here", JWT),
        (f"first chars {JWT[:40]}", JWT[:40]),  # a cut-off token is still a token
        ("client_id=syncd&client_secret=hunter22&grant_type=x", "hunter22"),
        ('{"refresh_token": "r-tok-abcdef"}', "r-tok-abcdef"),
    ],
)
def test_mask_removes_value(registry: SecretRegistry, text: str, leaked: str) -> None:
    masked = registry.mask(text)
    assert leaked not in masked
    assert MASK in masked


def test_mask_keeps_ordinary_text(registry: SecretRegistry) -> None:
    text = "team research: HTTP 400: Team id = abc already exists (skipped 3)"
    assert registry.mask(text) == text


def test_registry_tracks_url_and_json_forms() -> None:
    reg = SecretRegistry()
    reg.add('pa ss"w/rd+9')
    assert "pa" not in reg.mask("body: client_secret_x=pa+ss%22w%2Frd%2B9")
    assert "rd" not in reg.mask(json.dumps({"v": 'pa ss"w/rd+9'}))


def test_short_values_are_not_registered() -> None:
    reg = SecretRegistry()
    reg.add("ab")
    reg.add("")
    reg.add(None)
    assert reg.mask("ab cab") == "ab cab"


def test_tokens_are_bounded_but_recent_ones_stay() -> None:
    reg = SecretRegistry()
    for i in range(500):
        reg.add_token(f"opaque-token-{i:04d}")
    assert "opaque-token-0499" not in reg.mask("opaque-token-0499")
    assert len(reg) <= 64 + 8


def test_mask_data_recurses(registry: SecretRegistry) -> None:
    doc = {"error": f"boom {SECRET}", "list": [KEY, {"deep": (f"Bearer {KEY}",)}], "n": 3}
    out = registry.mask_data(doc)
    assert SECRET not in json.dumps(out) and KEY not in json.dumps(out)
    assert out["n"] == 3


def test_cut_masks_before_cutting(registry: SecretRegistry) -> None:
    # Cutting first would leave a prefix of the secret that no literal matches.
    text = "x" * 190 + SECRET
    assert SECRET[:8] not in cut(text, 200, registry=registry)
    assert len(cut("y" * 1000, 200)) <= 201


def test_error_text_never_quotes_a_raw_body(global_secrets: SecretRegistry) -> None:
    html = f"<html><pre>authorization: Bearer {KEY}</pre></html>"
    response = httpx.Response(500, text=html, headers={"content-type": "text/html"})
    text = error_text(response)
    assert KEY not in text and "<html>" not in text
    assert text == f"non-JSON body of {len(html)} bytes, text/html"
    assert body_summary(response) == text


def test_error_text_quotes_the_parsed_message_masked(global_secrets: SecretRegistry) -> None:
    long = "m" * 500
    body = {"error": {"message": f"Authentication Error, invalid key {KEY} {long}"}}
    text = error_text(httpx.Response(401, json=body))
    assert KEY not in text and "Authentication Error" in text
    assert len(text) <= 210
    detail = error_text(httpx.Response(400, json={"detail": {"error": f"x {SECRET}"}}))
    assert detail.startswith("x ") and SECRET not in detail


def test_transport_error_text_is_masked(global_secrets: SecretRegistry) -> None:
    exc = httpx.ConnectError(f"failed to reach https://u:{SECRET}@host/")
    assert SECRET not in describe_transport_error(exc)


def test_log_events_are_masked(
    global_secrets: SecretRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("info", "json")
    try:
        log = structlog.get_logger("t")
        log.error("sync_failed", error=f"HTTP 500: Bearer {KEY}", detail=[SECRET], tok=JWT)
        try:
            raise RuntimeError(f"crash with {SECRET}")
        except RuntimeError:
            log.exception("sync_crashed")
        log.info("obj", thing=_Leaky())  # a repr'd object is masked too
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert SECRET not in err and KEY not in err and "eyJ" not in err
    events = [json.loads(line) for line in err.splitlines()]
    assert [e["event"] for e in events] == ["sync_failed", "sync_crashed", "obj"]


@pytest.mark.parametrize(("lifetime", "margin"), [(5, 2.0), (3, 1.5), (60, 6.0), (300, 30.0)])
def test_tokens_are_renewed_ahead_of_expiry(lifetime: float, margin: float) -> None:
    from syncd.keycloak import refresh_margin

    assert refresh_margin(lifetime) == margin


def test_library_logs_go_through_the_mask_in_once_mode_too() -> None:
    """A library logging a secret through the stdlib (as python-keycloak or httpx
    may, with a server's answer) reaches stderr as a masked JSON line."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from syncd.logs import configure\n"
        "from syncd.secrets import Secrets\n"
        "Secrets.add('s3cr3t-client-secret-value')\n"
        "configure('info', 'json')\n"
        "logging.getLogger('keycloak').warning('token endpoint said s3cr3t-client-secret-value')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "s3cr3t-client-secret-value" not in proc.stderr + proc.stdout
    (line,) = [json.loads(x) for x in proc.stderr.splitlines() if x.strip()]
    assert line["event"] == "library_log" and line["source"] == "keycloak"
