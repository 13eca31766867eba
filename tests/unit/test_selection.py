"""Group selection and team settings precedence (pure parts of the Keycloak reader)."""

from __future__ import annotations

from typing import Any

from syncd.config import Settings
from syncd.keycloak import Group, KeycloakReader, _parse_setting
from syncd.model import TeamSettings


def settings(**sections: dict[str, Any]) -> Settings:
    base: dict[str, Any] = {
        "keycloak": {"url": "http://kc", "realm": "r", "client_id": "c", "client_secret": "s"},
        "litellm": {"url": "http://ll", "api_key": "k"},
        "selection": {"path_prefixes": ["/llm"]},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return Settings(**base)


def tree() -> list[Group]:
    def g(gid: str, path: str, parent: Group | None = None, **attrs: list[str]) -> Group:
        group = Group(gid, path.rsplit("/", 1)[1], path, parent.id if parent else None,
                      attrs, 0)
        if parent:
            parent.children.append(group)
            parent.sub_group_count += 1
        return group

    llm = g("1", "/llm")
    research = g("2", "/llm/research", llm, **{"litellm.max_budget": ["20"],
                                               "litellm.models": ["a,b", "c"]})
    g("3", "/llm/research/admins", research)
    g("4", "/llm/archive", llm)
    other = g("5", "/other")
    g("6", "/other/ds", other, **{"litellm.sync": ["true"], "litellm.tpm_limit": ["x"]})
    lookalike = g("7", "/llm-not-a-child")
    return [llm, other, lookalike]


def reader(s: Settings) -> KeycloakReader:
    return KeycloakReader(s, None, None)  # type: ignore[arg-type]  # pure methods only


def test_prefix_attribute_exclude_and_admin_subgroup() -> None:
    s = settings(selection={"exclude_paths": ["/llm/archive"]},
                 members={"admin_subgroup": "admins"})
    paths = [g.path for g in reader(s).selected(tree())]
    assert paths == ["/llm", "/llm/research", "/other/ds"]


def test_prefix_matches_whole_path_segments_only() -> None:
    s = settings(selection={"attribute": None})
    assert "/llm-not-a-child" not in [g.path for g in reader(s).selected(tree())]


def test_settings_precedence_defaults_attributes_overrides() -> None:
    s = settings(teams={"defaults": {"max_budget": 5, "rpm_limit": 7},
                        "overrides": {"/llm/research": {"max_budget": 99}}})
    r = reader(s)
    research = tree()[0].children[0]
    got = r._team_settings(research)
    assert got == TeamSettings(models=("a", "b", "c"), max_budget=99.0, rpm_limit=7)
    ds = tree()[1].children[0]
    assert r._team_settings(ds) == TeamSettings(max_budget=5.0, rpm_limit=7)
    assert any("litellm.tpm_limit" in w and "/other/ds" in w for w in r.warnings)


def test_parse_setting_rejects_bad_values() -> None:
    for name, value in [("max_budget", "-1"), ("tpm_limit", "1.5"), ("budget_duration", "soon")]:
        try:
            _parse_setting(name, [value])
        except ValueError:
            continue
        raise AssertionError(f"{name}={value} accepted")
    assert _parse_setting("budget_duration", ["30d"]) == "30d"
