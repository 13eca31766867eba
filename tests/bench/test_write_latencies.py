"""bench.events' daemon-side latency: a change's writes are those before the next change."""

from __future__ import annotations

from typing import Any

from bench.events import add_write_latencies


def test_each_change_gets_the_last_write_before_the_next_change() -> None:
    rows: list[dict[str, Any]] = [{"at": 100.0}, {"at": 110.0}, {"at": 120.0}]
    add_write_latencies(rows, [99.0, 100.4, 101.2, 110.9, 125.5, 126.0])
    assert [r["write_latency_s"] for r in rows] == [1.2, 0.9, 6.0]


def test_a_change_without_a_write_has_no_write_latency() -> None:
    rows: list[dict[str, Any]] = [{"at": 20.0}, {"at": 10.0}]
    add_write_latencies(rows, [10.5])
    assert rows[1]["write_latency_s"] == 0.5
    assert rows[0]["write_latency_s"] is None
