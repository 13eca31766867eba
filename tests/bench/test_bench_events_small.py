"""The event fast-path benchmark (bench/events.py) in small mode, so it keeps working.

Runs ``bench.events.run_events_bench("small")`` with reduced counts: 3 changes
of each kind, a 20 s idle window, a 50-change burst, against a real Keycloak
(admin events enabled by the bench), the emulator in its own process and the
real daemon. Asserts that it completes and that the figures are sane: every
change seen, idle costs about one request per poll and no LiteLLM write, the
burst converges with the changes a full reconcile makes (the requests may be
more: its additions can be split across scoped runs), ``--check`` finds
nothing. Never how fast it was.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.events import KINDS, run_events_bench, table
from syncd.config import EventsSettings
from tests.bench import keycloak_or_skip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    keycloak_or_skip()
    doc = run_events_bench("small", per_kind=3, idle_seconds=20, burst=50)
    print(table(doc))
    return doc


def test_completes_without_problems(results: dict[str, Any]) -> None:
    assert results["problems"] == []
    assert results["fast_path_active"] is True
    assert "idle" in table(results)


def test_every_change_is_seen_through_the_fast_path(results: dict[str, Any]) -> None:
    prop = results["propagation"]
    for kind in KINDS:
        assert prop[kind]["n"] == 3 and prop[kind]["seen"] == 3, kind
        assert prop[kind]["p50_s"] is not None and prop[kind]["p50_s"] >= 0
    assert len(results["propagation_raw"]) == 15
    assert results["final_check_exit_code"] == 0
    assert results["final_verified_against_model"] is True
    runs = results["daemon"]["fast_path_runs"]
    assert runs["success"] >= 15 and runs["failure"] == 0
    assert results["daemon"]["admin_events_applied"] >= 15


def test_idle_costs_about_one_request_per_poll_and_no_write(results: dict[str, Any]) -> None:
    idle = results["idle"]
    assert idle["full_reconciles_in_window"] == 0
    assert idle["litellm_writes"] == 0 and idle["litellm_requests_by_syncd"] == 0
    # 20 s at the default poll interval (1 s: 20 polls), give or take a couple at
    # each edge of the window
    polls = 20 / EventsSettings().poll_seconds
    assert polls - 2 <= idle["keycloak_requests"] <= polls + 3, idle


def test_burst_converges_with_the_changes_of_a_full_reconcile(results: dict[str, Any]) -> None:
    burst = results["burst"]
    assert burst["changes"] == 50
    assert burst["converged"] and burst["converged_after_last_change_s"] is not None
    assert burst["check_exit_code"] == 0
    assert burst["verified_against_model"] is True
    # The same changes a full reconcile makes, none twice and none refused;
    # the requests may be more (a team's additions split across scoped runs)
    assert burst["changes_by_kind"] == burst["changes_expected_full_reconcile"]
    assert burst["changes_expected_full_reconcile"]["remove_member"] == burst["removals"]
    assert burst["changes_expected_full_reconcile"]["add_member"] == burst["additions"]
    # nothing sent twice: only a key delete member_delete already did may be refused
    assert set(burst["writes_answered_error"]) <= {"/key/delete 404"}
    expected = burst["writes_expected_full_reconcile"]
    writes = burst["writes_by_path"]
    assert set(writes) == set(expected)
    assert writes["/team/member_delete"] == expected["/team/member_delete"]
    assert expected["/team/member_add"] <= writes["/team/member_add"] <= burst["additions"]
    assert burst["fast_path_runs"] >= 1
