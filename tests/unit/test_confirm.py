"""The confirmer on its own, over the FreshReads seam: which destructive steps
fresh replies keep, which they drop, and that every subject is read once.
The same confirmations against a real Keycloak are in tests/integration."""

from __future__ import annotations

import asyncio
from typing import Any

from syncd.confirm import Confirmer
from syncd.desired import Rules
from syncd.errors import SourceReadError
from syncd.evidence import GroupGone, SourceFacts, UserOutside
from syncd.operations import BlockTeam, BlockUser, Op, RemoveMember

FACTS = SourceFacts(sources={"t1": frozenset({"g1"})}, groups_known=frozenset({"g1", "g2"}))
RULES = Rules(path_prefixes=("/llm",))


class Replies:
    """Keycloak's replies by subject; a SourceReadError value is raised."""

    def __init__(self, users: dict[str, Any], groups: dict[str, Any],
                 user_groups: dict[str, list[dict[str, Any]]]) -> None:
        self.users, self.groups, self.user_groups = users, groups, user_groups
        self.calls: list[str] = []

    async def read_user(self, user_id: str) -> dict[str, Any] | None:
        self.calls.append(f"user {user_id}")
        reply = self.users.get(user_id)
        if isinstance(reply, SourceReadError):
            raise reply
        return reply  # type: ignore[no-any-return]

    async def read_user_groups(self, user_id: str) -> list[dict[str, Any]]:
        self.calls.append(f"groups of {user_id}")
        return self.user_groups.get(user_id, [])

    async def read_group(self, group_id: str) -> dict[str, Any] | None:
        self.calls.append(f"group {group_id}")
        return self.groups.get(group_id)  # type: ignore[no-any-return]


def block(uid: str) -> BlockUser:
    return BlockUser(uid, "departed", "departed", {}, UserOutside(uid, uid))


def remove(uid: str) -> RemoveMember:
    return RemoveMember("t1", uid, "not_in_group", "left", UserOutside(uid, uid, frozenset({"t1"})))


def test_fresh_replies_keep_what_they_confirm_and_drop_the_rest() -> None:
    replies = Replies(
        users={
            "gone": None,
            "back": {"id": "back", "enabled": True},
            "broken": SourceReadError("HTTP 503", status=503),
            "left": {"id": "left", "enabled": True},
        },
        groups={"t9": {"id": "t9", "name": "t9", "path": "/llm/t9", "attributes": {}}},
        user_groups={"back": [{"id": "g1", "path": "/llm/t1"}], "left": []},
    )
    ops: list[Op] = [block("gone"), block("back"), block("broken"), remove("left"), remove("left"),
                     BlockTeam("t9", "group_gone", "gone", {}, GroupGone("t9"))]
    confirmer = Confirmer(replies, FACTS, RULES)
    kept, dropped = asyncio.run(confirmer.confirm(ops))
    assert [(op.KIND, op.user_id) for op in kept] == [
        ("block_user", "gone"), ("remove_member", "left"), ("remove_member", "left"),
    ]
    why = {(op.KIND, op.user_id or op.team_id): reason for op, reason in dropped}
    assert set(why) == {("block_user", "back"), ("block_user", "broken"), ("block_team", "t9")}
    assert "could not re-read" in why[("block_user", "broken")]
    # One read per subject, however many steps rest on it.
    assert replies.calls.count("user left") == 1
    assert confirmer.reads == len(replies.calls)
