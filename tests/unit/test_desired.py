"""The desired state from a Keycloak snapshot: selection, roles, settings (no I/O)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from syncd.config import Settings, TeamSettingsSpec
from syncd.desired import (
    Group,
    Member,
    Rules,
    SourceSnapshot,
    build,
    feeders,
    groups_to_read,
    parse_setting,
    selected,
    still_selected,
    walk,
    why_team,
)
from syncd.model import TeamSettings
from syncd.reconciler import rules_from

RULES = Rules(path_prefixes=("/llm",), attribute="litellm.sync")


def g(gid: str, path: str, parent: Group | None = None, **attrs: list[str]) -> Group:
    group = Group(gid, path.rsplit("/", 1)[1], path, parent.id if parent else None, attrs, 0)
    if parent:
        parent.children.append(group)
        parent.sub_group_count += 1
    return group


def tree() -> list[Group]:
    llm = g("1", "/llm")
    research = g("2", "/llm/research", llm, **{"litellm.max_budget": ["20"],
                                               "litellm.models": ["a,b", "c"]})
    g("3", "/llm/research/admins", research)
    g("4", "/llm/archive", llm)
    other = g("5", "/other")
    g("6", "/other/ds", other, **{"litellm.sync": ["true"], "litellm.tpm_limit": ["x"]})
    lookalike = g("7", "/llm-not-a-child")
    return [llm, other, lookalike]


def member(name: str, *, enabled: bool = True) -> Member:
    return Member(f"id-{name}", name, f"{name}@example.com", enabled)


def paths(groups: list[Group]) -> list[str]:
    return [group.path for group in groups]


# -- selection --------------------------------------------------------------------


def test_prefix_attribute_exclude_and_admin_subgroup() -> None:
    rules = Rules(path_prefixes=("/llm",), attribute="litellm.sync",
                  exclude_paths=("/llm/archive",), admin_subgroup="admins")
    assert paths(selected(tree(), rules)) == ["/llm", "/llm/research", "/other/ds"]


def test_why_team_names_the_rule_that_decides_each_group() -> None:
    """What ``syncd explain`` prints is the decision the run makes, in config words."""
    rules = Rules(path_prefixes=("/llm",), attribute="litellm.sync",
                  exclude_paths=("/llm/archive",), admin_subgroup="admins")
    why = {group.path: why_team(group, rules) for group in walk(tree())}
    assert why["/llm/research"] == (True, "under selection.path_prefixes /llm")
    assert why["/llm/archive"] == (False, "excluded by selection.exclude_paths /llm/archive")
    assert why["/llm/research/admins"] == (False, "admin subgroup (members.admin_subgroup: "
                                                  "admins)")
    assert why["/other/ds"] == (True, "group attribute litellm.sync is true "
                                      "(selection.attribute)")
    assert why["/other"] == (False, "not under selection.path_prefixes ['/llm'] and no true "
                                    "attribute litellm.sync")
    assert [p for p, (chosen, _) in why.items() if chosen] == paths(selected(tree(), rules))


def test_without_an_admin_subgroup_rule_admins_is_a_team_like_any_other() -> None:
    assert "/llm/research/admins" in paths(selected(tree(), RULES))


def test_prefix_matches_whole_path_segments_only() -> None:
    rules = Rules(path_prefixes=("/llm",))
    assert "/llm-not-a-child" not in paths(selected(tree(), rules))
    assert "/other/ds" not in paths(selected(tree(), rules))  # no attribute rule


def test_rules_from_settings_match_the_configuration() -> None:
    settings = Settings(**{
        "keycloak": {"url": "http://kc", "realm": "r", "client_id": "c", "client_secret": "s"},
        "litellm": {"url": "http://ll", "api_key": "k"},
        "selection": {"path_prefixes": ["/llm"], "exclude_paths": ["/llm/archive"]},
        "members": {"admin_subgroup": "admins", "default_role": "admin"},
        "teams": {"alias_from": "path", "defaults": {"models": ["m"], "max_budget": 5},
                  "overrides": {"/llm/research": {"rpm_limit": 3}}},
    })
    assert rules_from(settings) == Rules(
        path_prefixes=("/llm",), attribute="litellm.sync", exclude_paths=("/llm/archive",),
        admin_subgroup="admins", default_role="admin", alias_from="path",
        defaults=TeamSettings(models=("m",), max_budget=5.0),
        overrides={"/llm/research": TeamSettings(rpm_limit=3)},
    )


def test_still_selected_judges_a_fresh_group_reply_by_the_same_rules() -> None:
    rules = Rules(path_prefixes=("/llm",), attribute="litellm.sync", admin_subgroup="admins")
    assert still_selected({"id": "2", "name": "research", "path": "/llm/research"}, rules)
    assert not still_selected({"id": "9", "name": "x", "path": "/other/x"}, rules)
    assert still_selected({"id": "9", "name": "x", "path": "/other/x",
                           "attributes": {"litellm.sync": ["yes"]}}, rules)
    admins = {"id": "3", "name": "admins", "path": "/llm/research/admins", "parentId": "2"}
    assert not still_selected(admins, rules)


# -- feeders and the member reads ---------------------------------------------------


def test_admin_subgroup_feeds_its_parent_as_admin() -> None:
    rules = Rules(path_prefixes=("/llm",), admin_subgroup="admins")
    research = tree()[0].children[0]
    assert [(s.path, role) for s, role in feeders(research, rules)] == [
        ("/llm/research", "user"), ("/llm/research/admins", "admin"),
    ]


def test_flatten_feeds_every_descendant() -> None:
    rules = Rules(path_prefixes=("/llm",), flatten=True, exclude_paths=("/llm/archive",))
    llm = tree()[0]
    assert [(s.path, role) for s, role in feeders(llm, rules)] == [
        ("/llm", "user"), ("/llm/research", "user"), ("/llm/research/admins", "user"),
        ("/llm/archive", "user"),  # excluded as a team, still a source of /llm's members
    ]
    assert [(s.path, role) for s, role in feeders(llm, Rules(path_prefixes=("/llm",)))] == [
        ("/llm", "user"),
    ]


def test_groups_to_read_are_the_feeders_of_selected_groups() -> None:
    rules = Rules(path_prefixes=("/llm/research",), admin_subgroup="admins")
    assert groups_to_read(tree(), rules) == {"2", "3"}


# -- build ---------------------------------------------------------------------------


def test_build_rosters_with_flattening_and_roles() -> None:
    rules = Rules(path_prefixes=("/llm",), flatten=True, admin_subgroup="admins",
                  exclude_paths=("/llm/archive",))
    groups = tree()
    snapshot = SourceSnapshot(groups, {
        "1": [member("ann")],
        "2": [member("bob"), member("ann")],
        "3": [member("cat"), member("bob")],
        "4": [],
    })
    assert set(snapshot.members) == groups_to_read(groups, rules)
    desired = build(snapshot, rules).desired
    assert set(desired.teams) == {"1", "2"}
    assert desired.teams["2"].members == {"id-bob": "admin", "id-ann": "user", "id-cat": "admin"}
    # Flattened: research's admins are plain members of /llm (default role there).
    assert desired.teams["1"].members == {"id-ann": "user", "id-bob": "user", "id-cat": "user"}
    assert set(desired.users) == {"id-ann", "id-bob", "id-cat"}
    assert desired.users["id-ann"].email == "ann@example.com"
    assert desired.sources["2"] == frozenset({"2", "3"})
    assert desired.sources["1"] == frozenset({"1", "2", "3", "4"})
    assert desired.groups_seen == 7
    assert desired.groups_known == frozenset("1234567")


def test_admins_attribute_makes_listed_usernames_admin() -> None:
    groups = tree()
    groups[0].children[0].attributes = {"litellm.admins": ["bob"]}
    rules = Rules(path_prefixes=("/llm/research",), admin_subgroup="admins",
                  default_role="user")
    snapshot = SourceSnapshot(groups, {"2": [member("bob"), member("ann")]})
    team = build(snapshot, rules).desired.teams["2"]
    assert team.members == {"id-bob": "admin", "id-ann": "user"}


def test_admin_from_any_source_wins_over_a_later_user_role() -> None:
    rules = Rules(path_prefixes=("/llm/research",), admin_subgroup="admins", flatten=True)
    groups = tree()
    snapshot = SourceSnapshot(groups, {"3": [member("bob")], "2": [member("bob")]})
    assert build(snapshot, rules).desired.teams["2"].members == {"id-bob": "admin"}


def test_disabled_and_service_account_users_are_skipped() -> None:
    rules = Rules(path_prefixes=("/llm/research",))
    snapshot = SourceSnapshot(tree(), {"2": [
        member("ann"), member("off", enabled=False), member("service-account-syncd"),
    ]})
    desired = build(snapshot, rules).desired
    assert desired.teams["2"].members == {"id-ann": "user"}
    assert set(desired.users) == {"id-ann"}


def test_alias_from_name_or_path() -> None:
    snapshot = SourceSnapshot(tree(), {})
    by_name = build(snapshot, Rules(path_prefixes=("/llm/research",))).desired
    assert by_name.teams["2"].alias == "research"
    by_path = build(snapshot, Rules(path_prefixes=("/llm/research",), alias_from="path")).desired
    assert by_path.teams["2"].alias == "/llm/research"


def test_a_group_without_read_members_has_an_empty_roster() -> None:
    snapshot = SourceSnapshot(tree(), {})
    assert build(snapshot, Rules(path_prefixes=("/llm",))).desired.teams["1"].members == {}


def test_rebuilding_after_patching_members_moves_one_user() -> None:
    """The fast path edits ``snapshot.members`` and builds again."""
    rules = Rules(path_prefixes=("/llm",), exclude_paths=("/llm/archive",))
    snapshot = SourceSnapshot(tree(), {"1": [member("ann")], "2": [member("bob")]})
    snapshot.members["1"] = []
    snapshot.members["2"].append(member("ann"))
    desired = build(snapshot, rules).desired
    assert desired.teams["1"].members == {}
    assert desired.teams["2"].members == {"id-bob": "user", "id-ann": "user"}


# -- team settings -------------------------------------------------------------------


def test_settings_precedence_defaults_attributes_overrides() -> None:
    rules = Rules(path_prefixes=("/llm",), attribute="litellm.sync",
                  defaults=TeamSettings(max_budget=5.0, rpm_limit=7),
                  overrides={"/llm/research": TeamSettings(max_budget=99.0)})
    built = build(SourceSnapshot(tree(), {}), rules)
    teams = built.desired.teams
    assert teams["2"].settings == TeamSettings(models=("a", "b", "c"), max_budget=99.0,
                                               rpm_limit=7)
    assert teams["6"].settings == TeamSettings(max_budget=5.0, rpm_limit=7)
    assert teams["1"].settings == TeamSettings(max_budget=5.0, rpm_limit=7)


def test_a_bad_attribute_is_ignored_with_a_warning() -> None:
    built = build(SourceSnapshot(tree(), {}), RULES)
    assert built.desired.teams["6"].settings == TeamSettings()
    assert len(built.warnings) == 1
    assert "litellm.tpm_limit" in built.warnings[0] and "/other/ds" in built.warnings[0]


def test_each_build_has_its_own_warnings() -> None:
    snapshot = SourceSnapshot(tree(), {})
    assert len(build(snapshot, RULES).warnings) == len(build(snapshot, RULES).warnings) == 1


def test_parse_setting_rejects_bad_values() -> None:
    for name, value in [("max_budget", "-1"), ("tpm_limit", "1.5"), ("budget_duration", "soon"),
                        ("max_budget", "nan"), ("rpm_limit", "-3")]:
        with pytest.raises(ValueError):
            parse_setting(name, [value])
    assert parse_setting("budget_duration", ["30d"]) == "30d"
    assert parse_setting("tpm_limit", [" 7 "]) == 7
    assert parse_setting("max_budget", ["20"]) == 20.0
    assert parse_setting("models", ["a, b", "c,"]) == ("a", "b", "c")


def test_the_config_spec_declares_exactly_the_team_settings() -> None:
    assert set(TeamSettingsSpec.model_fields) == {f.name for f in fields(TeamSettings)}
