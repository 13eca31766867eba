"""The applier against an in-memory LiteLLM (its `Writes` seam).

What is decided here rather than by the proxy: the order of phases, which
operations wait for a failed prerequisite, the licence refusal asked once, a
batch whose answer was lost checked before anything is resent, and no write
started once the run is asked to stop. The same applier against the emulator
over HTTP is in tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from syncd.apply import Applier, Writes
from syncd.errors import TargetWriteError, WriteUncertain
from syncd.http import RetryBudget
from syncd.metrics import Metrics
from syncd.model import Role, TeamSettings
from syncd.operations import AddMember, ChangeMemberRole, CreateUser, Op


class Ledger:
    """LiteLLM as the applier sees it: users, rosters, and every call in order.

    `refuse_users`: create_user fails for these. `lose_after`: a member_add of
    more than one member applies this many, then its answer is lost.
    `unlicensed`: the admin role is refused, as 1.110.2 refuses it."""

    def __init__(self, *, refuse_users: frozenset[str] = frozenset(), lose_after: int | None = None,
                 unlicensed: bool = False) -> None:
        self.users: set[str] = set()
        self.rosters: dict[str, dict[str, Role]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.refuse_users = refuse_users
        self.lose_after = lose_after
        self.unlicensed = unlicensed

    async def create_user(self, user_id: str, email: str | None, username: str,
                          metadata: Mapping[str, Any] | None = None) -> bool:
        self.calls.append(("create_user", user_id))
        if user_id in self.refuse_users:
            raise TargetWriteError(f"user {user_id} refused", status=400)
        self.users.add(user_id)
        return True

    async def add_members(self, team_id: str, members: Sequence[tuple[str, Role]]) -> None:
        self.calls.append(("add_members", (team_id, tuple(uid for uid, _ in members))))
        if self.unlicensed and any(role == "admin" for _, role in members):
            raise TargetWriteError("Assigning team admins is a premium feature.", status=400,
                                   kind="premium")
        roster = self.rosters.setdefault(team_id, {})
        if self.lose_after is not None and len(members) > 1:
            roster.update(dict(members[: self.lose_after]))
            raise WriteUncertain("HTTP 500 from /team/member_add", status=500)
        roster.update(dict(members))

    async def team_member_ids(self, team_id: str) -> set[str] | None:
        self.calls.append(("team_member_ids", team_id))
        return set(self.rosters.get(team_id, {}))

    async def change_member_role(self, team_id: str, user_id: str, role: Role) -> None:
        self.calls.append(("change_member_role", (team_id, user_id)))
        if self.unlicensed and role == "admin":
            raise TargetWriteError("Assigning team admins is a premium feature.", status=400,
                                   kind="premium")
        self.rosters[team_id][user_id] = role

    async def _unused(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("not expected in these tests")

    update_user_metadata = update_user_profile = release_email = _unused
    update_team = block_team = unblock_team = delete_team = _unused
    remove_member = delete_keys = block_key = unblock_key = delete_user = _unused

    async def create_team(self, team_id: str, alias: str, settings: TeamSettings,
                          metadata: Mapping[str, Any]) -> bool:
        raise AssertionError("not expected in these tests")


def run(ledger: Writes, ops: Sequence[Op], *, stop: asyncio.Event | None = None,
        budget: int = 10) -> Applier:
    applier = Applier(ledger, Metrics(), RetryBudget(budget), stop)
    asyncio.run(applier.apply(ops))
    return applier


def test_the_memberships_of_a_user_whose_creation_failed_are_not_sent() -> None:
    ledger = Ledger(refuse_users=frozenset({"u1"}))
    ops: list[Op] = [CreateUser("u1", None, "one"), CreateUser("u2", None, "two"),
                     AddMember("t", "u1", "user"), AddMember("t", "u2", "user")]
    applier = run(ledger, ops)
    assert ("add_members", ("t", ("u2",))) in ledger.calls
    assert all("u1" not in call[1][1] for call in ledger.calls if call[0] == "add_members")
    failed = {op.user_id: error for op, error in applier.result.failed}
    assert set(failed) == {"u1"} and len(applier.result.failed) == 2
    assert "prerequisite failed" in applier.result.failed[1][1]
    assert ledger.rosters == {"t": {"u2": "user"}}


def test_a_member_add_whose_answer_was_lost_is_checked_and_only_the_rest_sent() -> None:
    ledger = Ledger(lose_after=2)
    ops: list[Op] = [AddMember("t", f"u{i}", "user") for i in range(4)]
    applier = run(ledger, ops)
    assert set(ledger.rosters["t"]) == {"u0", "u1", "u2", "u3"}
    assert ("team_member_ids", "t") in ledger.calls
    sent_again = [c[1][1] for c in ledger.calls if c[0] == "add_members"][1:]
    assert not {"u0", "u1"} & {u for batch in sent_again for u in batch}  # never twice
    assert len(applier.result.done) == 4 and not applier.result.failed
    assert applier.result.batches_split >= 1


def test_a_refused_admin_role_is_asked_once_and_is_one_problem() -> None:
    ledger = Ledger(unlicensed=True)
    ops: list[Op] = [AddMember(f"t{i}", "boss", "admin") for i in range(3)]
    ops += [AddMember("t0", "u1", "user"), ChangeMemberRole("t1", "u2", "user", "admin")]
    ledger.rosters["t1"] = {"u2": "user"}
    applier = run(ledger, ops)
    admin_calls = [c for c in ledger.calls
                   if c[0] == "change_member_role" or "boss" in c[1][1]]
    assert len(admin_calls) == 1  # the probe; the others were never sent
    assert len(applier.result.refused) == 4
    assert applier.result.config_error is not None
    assert ledger.rosters["t0"] == {"u1": "user"}  # the rest went on
    assert not applier.result.failed


def test_nothing_is_started_once_the_run_is_asked_to_stop() -> None:
    ledger = Ledger()
    stop = asyncio.Event()
    stop.set()
    ops: list[Op] = [CreateUser("u1", None, "one"), AddMember("t", "u1", "user")]
    applier = run(ledger, ops, stop=stop)
    assert ledger.calls == []
    assert applier.result.not_started == 2 and not applier.result.done
