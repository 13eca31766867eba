"""Verdicts on fresh Keycloak replies: when a destructive step is still justified."""

from __future__ import annotations

from syncd.evidence import GroupGone, SourceFacts, UserOutside, judge_group, judge_user

FACTS = SourceFacts(
    sources={"t1": frozenset({"g1", "g1-admins"}), "t2": frozenset({"g2"})},
    groups_known=frozenset({"g1", "g1-admins", "g2", "other"}),
)
ENABLED = {"id": "u", "username": "alice", "enabled": True}


def test_gone_or_disabled_users_confirm_any_claim() -> None:
    everywhere = UserOutside("u", "u")
    assert judge_user(everywhere, None, None, FACTS) is None
    assert judge_user(everywhere, {**ENABLED, "enabled": False}, None, FACTS) is None


def test_a_member_seen_fresh_in_a_feeding_group_is_not_revoked() -> None:
    groups = [{"id": "g1-admins", "path": "/llm/t1/admins"}]
    why = judge_user(UserOutside("u", "u"), ENABLED, groups, FACTS)
    assert why is not None and "/llm/t1/admins" in why
    # leaving t2 only: being in t1 is no reason to keep t2
    assert judge_user(UserOutside("u", "u", frozenset({"t2"})), ENABLED, groups, FACTS) is None


def test_unknown_groups_and_unreadable_groups_disagree() -> None:
    new = [{"id": "brand-new", "path": "/llm/new"}]
    assert judge_user(UserOutside("u", "u"), ENABLED, new, FACTS) is not None
    assert judge_user(UserOutside("u", "u"), ENABLED, None, FACTS) is not None
    assert judge_user(UserOutside("u", "u"), ENABLED, [{"id": "other"}], FACTS) is None


def test_group_claims() -> None:
    assert judge_group(GroupGone("g1"), None, lambda g: True) is None
    assert judge_group(GroupGone("g1"), {"id": "g1", "path": "/x"}, lambda g: False) is None
    why = judge_group(GroupGone("g1"), {"id": "g1", "path": "/llm/t1"}, lambda g: True)
    assert why is not None and "/llm/t1" in why


def test_releasing_an_address_needs_the_user_gone_disabled_or_without_it() -> None:
    claim = UserOutside("u", "u", email="Ann@x.io")
    assert judge_user(claim, None, None, FACTS) is None
    assert judge_user(claim, {**ENABLED, "enabled": False}, None, FACTS) is None
    assert judge_user(claim, {**ENABLED, "email": "ann2@x.io"}, [], FACTS) is None
    # enabled and still holding it, even outside every group: never taken
    why = judge_user(claim, {**ENABLED, "email": "ann@X.io"}, [], FACTS)
    assert why is not None and "Ann@x.io" in why
