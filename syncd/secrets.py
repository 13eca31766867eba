"""The one place that knows every secret in play, and masks it in any text.

Error pages echo requests (an ingress's or LiteLLM's HTML 500 repeats the
headers, ``Authorization: Bearer <key>`` included; a token endpoint's page
repeats ``client_secret=...``), and any text from a server can end up in a log
event, an error message, stdout or ``--json``. Field-name redaction cannot see
a secret inside such text, so syncd masks by *value*: the LiteLLM key, the
Keycloak client secret and the access/refresh tokens are registered here when
they are read or fetched, and `mask` replaces each of them (and its URL- and
JSON-escaped forms) wherever it appears. Patterns catch what no registry can
know: any ``Bearer``/``Basic`` credential, ``sk-`` keys, JWTs (also cut-off
ones: the first characters of a token are still a token), and
``client_secret=``-style pairs.

`Secrets` is the process-wide registry; every output path (logs.py's
structlog processor, cli.py's printing, error text in http/litellm/keycloak)
goes through it.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

T = TypeVar("T")

MASK = "[masked]"
MIN_LENGTH = 4
"""Shorter values are not masked by value: masking every "ab" would make output
unreadable, and a secret that short protects nothing anyway."""
MAX_TOKENS = 64
"""Tokens kept (most recent first out last): a daemon on a realm with 5 s tokens
fetches thousands a day, and a token long expired is no longer a secret."""

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values, however they are quoted or cased.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[masked\])[A-Za-z0-9._~+/=-]{8,}"),
     rf"\1\2{MASK}"),
    # LiteLLM keys (master and virtual keys start with sk-).
    (re.compile(r"\bsk-[A-Za-z0-9_-]{3,}"), f"sk-{MASK}"),
    # JWTs, complete or cut off: header.payload.signature, all base64url.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,2}"), MASK),
    # name=value (form bodies, query strings) and "name": "value" (JSON) pairs
    # whose name says secret; "client_secret: Field required" is left alone.
    (
        re.compile(
            r"(?i)\b((?:client_)?secret|api_key|password|passwd|(?:access|refresh|id)_token)"
            r"""(=|["']\s*:\s*["'])(?!\[masked\])[^\s&"',;}<>]+"""
        ),
        rf"\1\2{MASK}",
    ),
)


def _forms(value: str) -> set[str]:
    """The value as it may appear in text: raw, URL-encoded (form bodies, query
    strings) and JSON-escaped (a body or a log line that quotes it)."""
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    return {f for f in forms if len(f) >= MIN_LENGTH}


class SecretRegistry:
    """Literal secret values to mask; safe to use from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._static: set[str] = set()
        self._tokens: OrderedDict[str, None] = OrderedDict()
        self._sorted: tuple[str, ...] = ()

    def add(self, value: str | None) -> None:
        """Register a long-lived secret (a key, a client secret)."""
        if not value or len(value) < MIN_LENGTH:
            return
        with self._lock:
            self._static.update(_forms(value))
            self._rebuild()

    def add_token(self, value: str | None) -> None:
        """Register a token (access or refresh); only the most recent are kept."""
        if not value or len(value) < MIN_LENGTH:
            return
        with self._lock:
            for form in _forms(value):
                self._tokens[form] = None
                self._tokens.move_to_end(form)
            while len(self._tokens) > MAX_TOKENS:
                self._tokens.popitem(last=False)
            self._rebuild()

    def add_all(self, values: Iterable[str | None]) -> None:
        for value in values:
            self.add(value)

    def clear(self) -> None:
        """Forget every value (tests)."""
        with self._lock:
            self._static.clear()
            self._tokens.clear()
            self._rebuild()

    def _rebuild(self) -> None:
        # Longest first, so a value that contains another is masked whole.
        values = self._static | set(self._tokens)
        self._sorted = tuple(sorted(values, key=len, reverse=True))

    def __len__(self) -> int:
        return len(self._sorted)

    def mask(self, text: str) -> str:
        """`text` with every registered value and every secret pattern masked."""
        for value in self._sorted:  # a snapshot: another thread may rebuild
            if value in text:
                text = text.replace(value, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def mask_data(self, value: T) -> T:
        """Every string inside dicts, lists and tuples masked (keys too); other
        values unchanged. For documents about to be rendered (--json, log events)."""
        return self._mask_any(value)  # type: ignore[no-any-return]

    def _mask_any(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self._mask_any(k): self._mask_any(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._mask_any(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._mask_any(v) for v in value)
        return value


Secrets = SecretRegistry()
"""The process-wide registry: every secret syncd reads or fetches is added here."""


def mask(text: str) -> str:
    """`text` masked with the process-wide registry."""
    return Secrets.mask(text)


def cut(text: str, limit: int = 200, *, registry: SecretRegistry | None = None) -> str:
    """Masked, then cut to `limit` characters: cutting first could leave the start
    of a secret that no longer matches its full value."""
    masked = (registry or Secrets).mask(text)
    masked = " ".join(masked.split())  # one line: an HTML or JSON body spans many
    return masked if len(masked) <= limit else masked[:limit] + "…"
