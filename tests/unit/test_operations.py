"""Operations are values: hashable, immutable, and plain JSON when printed."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, get_args

import pytest

from syncd.evidence import UserOutside
from syncd.model import TeamSettings
from syncd.operations import ALL_KINDS, CreateUser, FrozenMap, Names, Op, ReleaseEmail, thaw

SAMPLE: dict[str, Any] = {
    "user_id": "u1", "team_id": "t1", "email": "u1@example.com", "username": "ann",
    "metadata": {"syncd_managed": True, "tags": ["a", {"nested": [1, 2]}]},
    "how": "id", "changes": (("metadata", {"syncd_group_path": "/a"}, {"syncd_group_path": "/b"}),),
    "alias": "team one", "settings": TeamSettings(models=("gpt",), max_budget=1.0),
    "role": "user", "old": "user", "new": "admin", "token": "hash", "label": "...abcd",
    "unblock": True, "cause": "departed", "reason": "departed: disabled",
    "evidence": UserOutside("u1", "u1", frozenset({"t1"})),
    "to_user_id": "u2", "to_email": "u1@example.com",
}


def sample(kind: type[Op]) -> Op:
    return kind(**{f.name: SAMPLE[f.name] for f in dataclasses.fields(kind)})


def test_all_kinds_is_the_op_union() -> None:
    assert get_args(Op) == ALL_KINDS and len(set(ALL_KINDS)) == 19


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.KIND)
def test_every_operation_is_hashable_and_equal_to_its_twin(kind: type[Op]) -> None:
    op, twin = sample(kind), sample(kind)
    assert hash(op) == hash(twin) and op == twin
    assert len({op, twin}) == 1


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.KIND)
def test_every_operation_names_its_team_and_user_and_describes_itself(kind: type[Op]) -> None:
    op = sample(kind)
    assert op.team_id in (None, "t1") and op.user_id in (None, "u1")
    extra = {"to_user_id": "u2"} if isinstance(op, ReleaseEmail) else {}  # both users it changes
    assert op.ids() == {
        k: v for k, v in (("team_id", op.team_id), ("user_id", op.user_id)) if v} | extra
    assert op.describe(Names()) and op.describe() == op.describe(Names())
    json.dumps(op.to_dict())  # plain JSON: no FrozenMap or tuple left


def test_metadata_is_frozen_but_reads_and_prints_as_given() -> None:
    op = sample(CreateUser)
    metadata = op.metadata
    assert isinstance(metadata, FrozenMap)
    assert metadata == {"syncd_managed": True, "tags": ("a", {"nested": (1, 2)})}
    assert thaw(metadata) == SAMPLE["metadata"]
    assert op.to_dict()["metadata"] == SAMPLE["metadata"]
    with pytest.raises(TypeError):
        metadata["syncd_managed"] = False
