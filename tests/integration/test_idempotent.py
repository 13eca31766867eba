"""Idempotent writes (issue 12): a create whose answer was lost, and two runs at once.

The emulator's after-phase faults let the write commit and then lose its
answer (connection reset) or send it after syncd's timeout, so the retry meets
syncd's own earlier success: "already exists" from ``/team/new`` and
``/user/new``. Two ``syncd --once`` started together meet each other's writes
the same way. Either must end as if one run had done the work.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import SYNCD, Result, Syncd, members, teams, users

pytestmark = pytest.mark.integration

TEAMS = ("/llm/a", "/llm/b", "/llm/c", "/llm/d")
N_USERS = 100  # each in the four groups: 400 memberships
LEAVERS = 20


def everyone_everywhere(n: int = N_USERS) -> list[User]:
    return [User(f"p{i:03}", f"p{i:03}@example.com", groups=list(TEAMS)) for i in range(n)]


@pytest.fixture
def big_realm(realm_factory: RealmFactory) -> KeycloakRealm:
    return realm_factory(groups=list(TEAMS), users=everyone_everywhere())


def expected_memberships(realm: KeycloakRealm) -> set[tuple[str, str]]:
    ids, uid = realm.group_ids(), realm.user_ids()
    return {
        (ids[path], uid[u.username])
        for u in everyone_everywhere()
        for path in TEAMS
    }


def memberships(emulator: EmulatorAdmin) -> set[tuple[str, str]]:
    return {(tid, uid) for tid, team in teams(emulator).items() for uid in members(team)}


def _no_clock(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata without the clocks syncd writes (each run stamps its own time)."""
    return {k: v for k, v in metadata.items() if not k.endswith("_at")}


def normalised(emulator: EmulatorAdmin) -> dict[str, Any]:
    """The emulated proxy's state, minus what differs between equal runs: times and
    generated key hashes (keys are named by owner and alias)."""
    state = emulator.state()
    return {
        "teams": sorted(
            (t["team_id"], t["team_alias"], t["blocked"], json.dumps(_no_clock(t["metadata"]),
             sort_keys=True), sorted((m["user_id"], m["role"]) for m in t["members_with_roles"]))
            for t in state["teams"]
        ),
        "users": sorted(
            (u["user_id"], u.get("user_email"), u.get("user_role"),
             json.dumps(_no_clock(u.get("metadata") or {}), sort_keys=True))
            for u in state["users"]
        ),
        "keys": sorted(
            (k.get("user_id"), k.get("key_alias"), k.get("blocked"),
             json.dumps(_no_clock(k.get("metadata") or {}), sort_keys=True))
            for k in state["keys"]
        ),
        "memberships": len(state["memberships"]),
        "consistency_problems": state["consistency_problems"],
    }


def no_duplicates(emulator: EmulatorAdmin) -> None:
    state = emulator.state()
    assert state["consistency_problems"] == []
    for team in state["teams"]:
        ids = [m["user_id"] for m in team["members_with_roles"]]
        assert len(ids) == len(set(ids)), f"duplicate roster entries in {team['team_id']}"
    assert len({u["user_id"] for u in state["users"]}) == len(state["users"])


def start(syncd: Syncd, name: str) -> subprocess.Popen[str]:
    """`syncd --once --json` in the background, with its own copy of the config."""
    path = syncd.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(syncd.config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(syncd.env)
    return subprocess.Popen([SYNCD, "--config", str(path), "--once", "--json"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def finish(proc: subprocess.Popen[str]) -> Result:
    out, err = proc.communicate(timeout=180)
    return Result(proc.returncode, out, err)


def two_at_once(syncd: Syncd) -> list[Result]:
    procs = [start(syncd, "first"), start(syncd, "second")]
    return [finish(p) for p in procs]


def describe(results: list[Result]) -> str:
    return "\n".join(
        f"exit {r.code}: {r.json.get('error') if r.stdout.strip() else r.stderr[-2000:]}; "
        f"failed={r.json.get('failed', [])[:3] if r.stdout.strip() else '?'}"
        for r in results
    )


# --- a lost answer after each kind of create -----------------------------------------


@pytest.mark.parametrize("path", ["/team/new", "/user/new", "/team/member_add"])
@pytest.mark.parametrize("loss", ["reset", "timeout"])
def test_lost_answer_after_a_create_is_done(
    path: str, loss: str, realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    """The first create commits, then its connection is reset (or its answer comes
    after syncd's 1 s timeout); the retry gets "already exists": exit 0, everything there."""
    realm = realm_factory(groups=["/llm/a", "/llm/b"], users=[
        User("ann", "ann@example.com", groups=["/llm/a", "/llm/b"]),
        User("ben", "ben@example.com", groups=["/llm/a"]),
    ])
    syncd = Syncd(realm, emulator, tmp_path, litellm={"timeout_seconds": 1})
    fault: dict[str, Any] = {"path": path, "phase": "after", "max_faults": 1}
    if loss == "reset":
        fault["drop_rate"] = 1.0
    else:
        fault.update(stall_rate=1.0, stall_ms=2500)
    emulator.set_faults([fault])
    result = syncd.once()
    assert result.code == 0, result.stdout + result.stderr
    assert emulator.faults()["fired"] == [1]  # the answer really was lost once
    attempts = [w["status"] for w in emulator.audit() if w["path"] == path]
    assert attempts[0] == 200 and len(attempts) >= 2  # committed, then retried
    ids, uid = realm.group_ids(), realm.user_ids()
    assert memberships(emulator) == {
        (ids["/llm/a"], uid["ann"]), (ids["/llm/b"], uid["ann"]), (ids["/llm/a"], uid["ben"]),
    }
    no_duplicates(emulator)
    assert result.json["summary"]["failed"] == 0
    assert syncd.once().json["summary"]["ll_writes"] == 0  # converged


def test_existing_team_without_marker_is_not_taken_for_ours(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    """"Already exists" is success only for syncd's own team. A team made by hand
    between syncd's read and its create is reported and left alone, its members wait."""
    realm = realm_factory(groups=["/llm/a"], users=[User("ann", "ann@example.com",
                                                         groups=["/llm/a"])])
    gid = realm.group_id("/llm/a")
    syncd = Syncd(realm, emulator, tmp_path, selection={"path_prefixes": ["/llm/a"]})
    # One team to create. syncd's /team/new is held for 3 s before it reaches the API;
    # meanwhile a person creates the team (the rule has fired, their request passes).
    emulator.set_faults([{"path": "/team/new", "stall_rate": 1.0, "stall_ms": 3000,
                          "max_faults": 1}])
    proc = start(syncd, "run")
    deadline = time.monotonic() + 60
    while emulator.counters()["paths"].get("/team/new", {}).get("writes", 0) == 0:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    emulator.create_team(team_id=gid, team_alias="by-hand", metadata={"owner": "ops"})
    result = finish(proc)
    assert result.code == 6, result.stdout + result.stderr
    failed = {f["op"]: f["error"] for f in result.json["failed"]}
    assert "without syncd's marker" in failed["create_team"]
    team = teams(emulator)[gid]
    assert team["team_alias"] == "by-hand" and "syncd_managed" not in team["metadata"]
    assert members(team) == {}


# --- two runs at once -----------------------------------------------------------------


def test_two_runs_at_once_on_an_initial_sync(
    big_realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    syncd = Syncd(big_realm, emulator, tmp_path)
    emulator.set_faults([{"path": "*", "method": "POST", "latency_ms": 5}])  # overlap
    results = two_at_once(syncd)
    assert [r.code for r in results] == [0, 0], describe(results)
    assert all(r.json["summary"]["failed"] == 0 for r in results)
    assert memberships(emulator) == expected_memberships(big_realm)
    no_duplicates(emulator)
    together = normalised(emulator)

    emulator.reset()
    alone = syncd.once()
    assert alone.code == 0, alone.stdout
    assert together == normalised(emulator)


def test_two_runs_at_once_on_twenty_departures(
    big_realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    syncd = Syncd(big_realm, emulator, tmp_path, safety={"max_blocked_fraction": 0.5})
    leavers = [f"p{i:03}" for i in range(LEAVERS)]

    def departures(concurrent: bool) -> tuple[list[Result], dict[str, Any]]:
        emulator.reset()
        for name in leavers:
            big_realm.enable_user(name)
        first = syncd.once()
        assert first.code == 0, first.stdout
        uid = big_realm.user_ids()
        for name in leavers[:10]:
            emulator.generate_key(user_id=uid[name], key_alias=f"{name}-laptop")
        for name in leavers:
            big_realm.disable_user(name)
        emulator.set_faults([{"path": "*", "method": "POST", "latency_ms": 5}])
        results = two_at_once(syncd) if concurrent else [syncd.once()]
        emulator.clear_faults()
        return results, normalised(emulator)

    results, together = departures(concurrent=True)
    assert [r.code for r in results] == [0, 0], describe(results)
    uid = big_realm.user_ids()
    people = users(emulator)
    for name in leavers:
        assert people[uid[name]]["metadata"]["scim_active"] is False
    assert all(k["blocked"] for k in emulator.state()["keys"])
    no_duplicates(emulator)
    assert syncd.once().json["summary"]["ll_writes"] == 0

    alone, state = departures(concurrent=False)
    assert alone[0].code == 0, alone[0].stdout
    assert together == state
