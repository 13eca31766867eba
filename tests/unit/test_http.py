"""Retry-After parsing: both forms RFC 9110 allows."""

from __future__ import annotations

from datetime import UTC, datetime

from syncd.http import retry_after_seconds

NOW = datetime(2026, 11, 30, 0, 0, 0, tzinfo=UTC)


def test_delta_seconds() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("-1") == 0.0


def test_http_date() -> None:
    assert retry_after_seconds("Mon, 30 Nov 2026 00:00:07 GMT", NOW) == 7.0
    assert retry_after_seconds("Sun, 29 Nov 2026 23:00:00 GMT", NOW) == 0.0


def test_absent_or_unreadable() -> None:
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds("soon") is None
