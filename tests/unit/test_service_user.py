"""syncd's own LiteLLM identity is protected like ``default_user_id`` (issue 15).

A non-master key's user is added as admin to every team the key creates
(LiteLLM 1.110.2 ``team_endpoints.py::new_team``). Even with a role that would
not protect it on its own, that user is never removed, blocked or counted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from syncd.model import MANAGED, Actual, Desired, DesiredTeam, DesiredUser, Team, TeamSettings, User
from syncd.operations import RemoveMember
from syncd.plan import make_plan
from tests.unit.policies import policy_at

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SVC = "svc-syncd"


def _states(service_user_id: str | None) -> tuple[Desired, Actual]:
    desired = Desired(
        teams={"t1": DesiredTeam("t1", "T1", "/llm/t1", TeamSettings(), {"ann": "user"})},
        users={"ann": DesiredUser("ann", "ann", "ann@example.com")},
        groups_seen=1,
    )
    actual = Actual(
        teams={"t1": Team("t1", "T1", TeamSettings(), {"ann": "user", SVC: "admin"},
                          metadata={MANAGED: True, "syncd_group_path": "/llm/t1"})},
        # internal_user on purpose: the role alone would not protect it
        users={"ann": User("ann", "ann@example.com", "internal_user", {MANAGED: True}),
               SVC: User(SVC, None, "internal_user", {})},
        keys={},
        service_user_id=service_user_id,
    )
    return desired, actual


def test_the_keys_own_user_is_never_removed_nor_drift() -> None:
    plan = make_plan(*_states(SVC), policy_at(NOW, brake_released=True))
    assert not plan, plan.operations


def test_without_the_identity_the_same_user_would_be_removed() -> None:
    """The control: what the protection prevents."""
    plan = make_plan(*_states(None), policy_at(NOW, brake_released=True))
    removed = [op for op in plan.operations if isinstance(op, RemoveMember)]
    assert [(op.team_id, op.user_id) for op in removed] == [("t1", SVC)]
