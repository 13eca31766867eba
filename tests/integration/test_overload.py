"""A proxy that cannot take syncd's batches (issue #21): the emulator with its
cost model rolls back member writes that outlive the transaction limit, loses
answers of batches it applied, and answers a create that lost a race with the
unique-constraint 500. syncd converges in one run: exit 0, every planned member
added exactly once, the split logged and counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import Result, Syncd, members, teams
from tests.integration.test_idempotent import describe, two_at_once

BIG = 160


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    """One large group (two batches of 100 at first) and three small ones."""
    users = [User(f"u{i:03d}", f"u{i:03d}@example.com",
                  groups=["/llm/big"] + ([f"/llm/g{i % 3}"] if i < 90 else []))
             for i in range(BIG)]
    return realm_factory(
        groups={"/llm/big": {}, "/llm/g0": {}, "/llm/g1": {}, "/llm/g2": {}}, users=users
    )


def events(result: Result, name: str) -> list[dict[str, Any]]:
    out = []
    for line in result.stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            out.append(event)
    return out


def assert_converged(syncd: Syncd, emulator: EmulatorAdmin, realm: KeycloakRealm) -> None:
    found = teams(emulator)
    big = found[realm.group_id("/llm/big")]
    assert len(members(big)) == BIG
    for n in range(3):
        assert len(members(found[realm.group_id(f"/llm/g{n}")])) == 30
    state = emulator.state()
    assert state["consistency_problems"] == []
    emulator.clear_faults()
    emulator.set_costs({})
    again = syncd.once()
    assert again.code == 0 and again.json["summary"]["planned"] == 0, again.stdout[-2000:]


def test_rolled_back_batches_are_split_and_the_run_converges_in_one_pass(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    # 8 ms per member, two CPUs, 500 ms per transaction: a batch of 100 (800 ms)
    # can never commit, 50 only alone; 25 go through beside another.
    emulator.set_costs({"workers": 2, "tx_timeout_ms": 500,
                        "routes": [{"path": "/team/member_add", "per_item_ms": 8}]})
    syncd = Syncd(realm, emulator, tmp_path)
    result = syncd.once()
    assert result.code == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.json["summary"]
    assert summary["failed"] == 0
    assert summary["batches_split"] >= 1 and summary["retried"] >= 1
    assert "batch(es) split" in events(result, "sync_finished")[0]["summary"]
    splits = events(result, "batch_split")
    assert len(splits) == summary["batches_split"]
    assert splits[0]["op"] == "member_add" and splits[0]["batch_size"] < 100
    assert emulator.costs()["expired"] >= 1
    # Every planned add is one change event: none applied twice, none lost.
    adds = [(e["team_id"], e["user_id"]) for e in events(result, "change")
            if e["op"] == "add_member"]
    assert len(adds) == len(set(adds)) == BIG + 90
    # A rolled-back batch is resent without a re-read; no resend met members already in.
    audit = [w for w in emulator.audit() if w["path"] == "/team/member_add"]
    assert not [w for w in audit if w["status"] == 400]
    assert_converged(syncd, emulator, realm)


def test_a_batch_applied_whose_answer_is_lost_is_reread_not_resent(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    # A gateway's 500 after the proxy committed: not retried by HTTP (500 is not
    # transient), so the applier re-reads the team and finds the batch applied.
    emulator.set_faults([{"path": "/team/member_add", "error_rate": 1.0, "error_status": 500,
                          "phase": "after", "max_faults": 2}])
    syncd = Syncd(realm, emulator, tmp_path)
    result = syncd.once()
    assert result.code == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.json["summary"]["failed"] == 0
    assert emulator.counters()["faults"].get("500_after") == 2
    audit = [w for w in emulator.audit() if w["path"] == "/team/member_add"]
    # Found applied by the re-read: no batch was sent again, so none met its own members.
    assert not [w for w in audit if w["status"] == 400]
    assert len(events(result, "batch_split")) == 0  # nothing was missing: nothing to split
    assert_converged(syncd, emulator, realm)


def test_two_runs_racing_on_the_initial_sync_both_succeed(
    realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    # Creates take long enough that the two runs' creates overlap: the loser's insert
    # meets the unique constraint (500), which is "already exists", not a failure.
    emulator.set_costs({"workers": 16, "routes": [
        {"path": "/team/new", "per_item_ms": 3000}, {"path": "/user/new", "per_item_ms": 1500},
    ]})
    syncd = Syncd(realm, emulator, tmp_path)
    results = two_at_once(syncd)
    assert [r.code for r in results] == [0, 0], describe(results)
    assert emulator.costs()["races"] >= 1
    assert sum(r.json["summary"]["already_existed"] for r in results) >= 1
    assert_converged(syncd, emulator, realm)
