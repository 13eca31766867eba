"""The cost model (issue #21): member writes to one team wait on each other inside
a transaction with a time limit and are rolled back (500) when they outlive it;
two creates of one id race into the unique-constraint 500; requests share the
proxy's CPU. Observed over real HTTP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from devtools.litellm_emulator.admin import EmulatorAdmin
from tests.emulator.conftest import ACTOR

SLOW_MEMBERS = {
    "workers": 4,
    "tx_timeout_ms": 250,
    "routes": [{"path": "/team/member_add", "per_item_ms": 10}],
}


def _post_all(emulator: EmulatorAdmin, path: str, bodies: list[dict]) -> list[httpx.Response]:
    def post(body: dict) -> httpx.Response:
        with emulator.client(headers={"litellm-changed-by": ACTOR}) as client:
            return client.post(path, json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def test_concurrent_batches_to_one_team_wait_and_the_late_one_is_rolled_back(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    api.post("/team/new", json={"team_id": "t1"}).raise_for_status()
    emulator.set_costs(SLOW_MEMBERS)
    batches = [
        {"team_id": "t1", "member": [{"user_id": f"{b}-{i}", "role": "user"} for i in range(15)]}
        for b in ("a", "b")
    ]
    answers = _post_all(emulator, "/team/member_add", batches)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 500]  # 150 ms each, the second waited 150 ms: 300 > 250
    failed = next(r for r in answers if r.status_code == 500)
    # As the real proxy: _process_team_members wraps Prisma's P2028 (E2 body).
    error = failed.json()["detail"]["error"]
    assert error.startswith("Unable to add user - ") and "to team - t1, for reason - " in error
    assert "Transaction already closed: A query cannot be executed on an expired" in error
    members = api.get("/team/info", params={"team_id": "t1"}).json()["team_info"][
        "members_with_roles"
    ]
    prefixes = {m["user_id"].split("-")[0] for m in members if "-" in m["user_id"]}
    assert len(prefixes) == 1  # the rolled-back batch left nothing behind
    assert emulator.costs()["expired"] == 1


def test_batches_to_different_teams_do_not_wait_on_each_other(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    for team in ("t1", "t2"):
        api.post("/team/new", json={"team_id": team}).raise_for_status()
    emulator.set_costs(SLOW_MEMBERS)
    batches = [
        {"team_id": t, "member": [{"user_id": f"{t}-{i}", "role": "user"} for i in range(15)]}
        for t in ("t1", "t2")
    ]
    assert [r.status_code for r in _post_all(emulator, "/team/member_add", batches)] == [200, 200]


def test_racing_creates_meet_the_unique_constraint(
    api: httpx.Client, emulator: EmulatorAdmin
) -> None:
    emulator.set_costs({"routes": [
        {"path": "/team/new", "per_item_ms": 150}, {"path": "/user/new", "per_item_ms": 150},
    ], "workers": 4})
    teams = _post_all(emulator, "/team/new", [{"team_id": "race"}] * 2)
    assert sorted(r.status_code for r in teams) == [200, 500]
    loser = next(r for r in teams if r.status_code == 500).json()["error"]
    assert loser["message"] == "Unique constraint failed on the fields: (`team_id`)"
    users = _post_all(emulator, "/user/new", [{"user_id": "u-race", "auto_create_key": False}] * 2)
    assert sorted(r.status_code for r in users) == [200, 500]
    # Outside a race the answer stays the 400/409 "already exists".
    again = api.post("/team/new", json={"team_id": "race"})
    assert again.status_code == 400 and "already exists" in again.json()["error"]["message"]
    assert emulator.costs()["races"] == 2


def test_requests_share_the_proxy_cpu(api: httpx.Client, emulator: EmulatorAdmin) -> None:
    emulator.set_costs({"workers": 1, "read_ms": 100})
    with ThreadPoolExecutor(4) as pool:
        start = time.monotonic()
        list(pool.map(lambda _: emulator.client().get("/user/list").status_code, range(4)))
        took = time.monotonic() - start
    assert took >= 0.4  # four reads of 100 ms through one CPU
    emulator.set_costs({})
    start = time.monotonic()
    api.get("/user/list").raise_for_status()
    assert time.monotonic() - start < 0.1
