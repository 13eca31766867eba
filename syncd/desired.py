"""What Keycloak's groups and members mean as LiteLLM teams: the desired state.

The reader (syncd.keycloak) only fetches; every decision lives here, as pure
functions of a `SourceSnapshot` and the `Rules`: which groups are teams, whose
members feed them in which role, and which settings they carry. Keeping it
free of I/O lets the planner's tests and the event-driven fast path rebuild
`Desired` from an edited snapshot (``snapshot.members`` is a plain dict of
group id to direct members) without a Keycloak in sight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from syncd.config import TeamSettingsSpec
from syncd.errors import SourceReadError
from syncd.model import Desired, DesiredTeam, DesiredUser, Role, TeamSettings

SERVICE_ACCOUNT_PREFIX = "service-account-"
# Declared once, in TeamSettings; the config spec, the group attributes and
# LiteLLM's rows are all read field by field from this list.
SETTING_FIELDS = tuple(f.name for f in fields(TeamSettings))


@dataclass
class Group:
    id: str
    name: str
    path: str
    parent_id: str | None
    attributes: Mapping[str, list[str]]
    sub_group_count: int
    children: list[Group] = field(default_factory=list)

    def descendants(self) -> Iterable[Group]:
        for child in self.children:
            yield child
            yield from child.descendants()


@dataclass(frozen=True)
class Member:
    id: str
    username: str
    email: str | None
    enabled: bool
    email_verified: bool = False  # Keycloak's emailVerified (users.link_by_email)


@dataclass
class SourceSnapshot:
    """Raw facts from one read: the group tree, and the direct members of the
    groups `groups_to_read` asked for, by group id."""

    groups: list[Group]
    members: dict[str, list[Member]] = field(default_factory=dict)


@dataclass(frozen=True)
class Rules:
    """The configuration that turns groups into teams, without the connection
    settings, so that building needs no `Settings` (tests, the fast path)."""

    path_prefixes: tuple[str, ...] = ()
    attribute: str | None = None
    exclude_paths: tuple[str, ...] = ()
    flatten: bool = False
    admin_subgroup: str | None = None
    default_role: Role = "user"
    alias_from: Literal["name", "path"] = "name"
    attribute_prefix: str = "litellm."
    defaults: TeamSettings = field(default_factory=TeamSettings)
    overrides: Mapping[str, TeamSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class Built:
    desired: Desired
    # Group attributes that were ignored, for the run's warnings: a typo in one
    # group must not stop the sync of all the others.
    warnings: list[str]


def parse_group(raw: Mapping[str, Any], parent: Group | None) -> Group:
    """A Keycloak group representation as a `Group` (children not included);
    shared by the tree read and `still_selected`, so both judge the same thing."""
    try:
        gid = raw["id"]
        name = raw["name"]
    except KeyError as exc:
        raise SourceReadError(f"Keycloak returned a group without {exc.args[0]!r}") from None
    path = raw.get("path") or (f"{parent.path}/{name}" if parent else f"/{name}")
    attributes = raw.get("attributes") or {}
    count = raw.get("subGroupCount")
    if count is None:  # older servers: fall back to the embedded list
        count = len(raw.get("subGroups") or [])
    return Group(
        id=str(gid),
        name=str(name),
        path=str(path),
        parent_id=parent.id if parent else None,
        attributes={str(k): [str(v) for v in vs] for k, vs in attributes.items()},
        sub_group_count=int(count),
    )


# -- selection ----------------------------------------------------------------


def selected(groups: Iterable[Group], rules: Rules) -> list[Group]:
    """The groups that become teams, in tree order."""
    return [group for group in walk(groups) if _is_team(group, rules)]


def _is_team(group: Group, rules: Rules) -> bool:
    return why_team(group, rules)[0]


def why_team(group: Group, rules: Rules) -> tuple[bool, str]:
    """Whether `group` becomes a team, and the rule that decides it in the
    configuration's words: the one decision, so ``syncd explain`` can never
    give a reason the run does not follow."""
    excluded = next((ex for ex in rules.exclude_paths if _under(group.path, ex)), None)
    if excluded is not None:
        return False, f"excluded by selection.exclude_paths {excluded}"
    if _is_admin_subgroup(group, rules):
        # The admins of its parent team, not a team of its own.
        return False, f"admin subgroup (members.admin_subgroup: {rules.admin_subgroup})"
    prefix = next((p for p in rules.path_prefixes if _under(group.path, p)), None)
    if prefix is not None:
        return True, f"under selection.path_prefixes {prefix}"
    if rules.attribute and _truthy(group.attributes.get(rules.attribute)):
        return True, f"group attribute {rules.attribute} is true (selection.attribute)"
    by = [f"not under selection.path_prefixes {list(rules.path_prefixes)}"]
    if rules.attribute:
        by.append(f"no true attribute {rules.attribute}")
    return False, " and ".join(by)


def _is_admin_subgroup(group: Group, rules: Rules) -> bool:
    return bool(rules.admin_subgroup) and group.name == rules.admin_subgroup and (
        group.parent_id is not None
    )


def still_selected(raw: Mapping[str, Any], rules: Rules) -> bool:
    """Would the rules pick this freshly read group (``GET /groups/{id}``) as a team?"""
    group = parse_group(raw, None)
    if raw.get("parentId"):
        group.parent_id = str(raw["parentId"])
    return _is_team(group, rules)


def feeders(group: Group, rules: Rules) -> list[tuple[Group, Role]]:
    """The groups whose members make up the team of `group`, with their role:
    the group itself, its admin subgroup, and with flatten every descendant.
    Also what a fresh read is judged against (Desired.sources)."""
    sources: list[tuple[Group, Role]] = [(group, rules.default_role)]
    subgroups = group.descendants() if rules.flatten else group.children
    for child in subgroups:
        if rules.admin_subgroup and child.name == rules.admin_subgroup and (
            child.parent_id == group.id
        ):
            sources.append((child, "admin"))
        elif rules.flatten:
            sources.append((child, rules.default_role))
    return sources


def groups_to_read(groups: Iterable[Group], rules: Rules) -> set[str]:
    """Ids of the groups whose direct members `build` needs."""
    return {g.id for team in selected(groups, rules) for g, _ in feeders(team, rules)}


# -- the desired state ----------------------------------------------------------


def build(snapshot: SourceSnapshot, rules: Rules) -> Built:
    """The teams and users Keycloak asks for; a group missing from
    ``snapshot.members`` counts as having no members."""
    users: dict[str, DesiredUser] = {}
    teams: dict[str, DesiredTeam] = {}
    warnings: list[str] = []
    sources: dict[str, frozenset[str]] = {}
    for group in selected(snapshot.groups, rules):
        feeding = feeders(group, rules)
        sources[group.id] = frozenset(g.id for g, _ in feeding)
        teams[group.id] = DesiredTeam(
            team_id=group.id,
            alias=group.path if rules.alias_from == "path" else group.name,
            path=group.path,
            settings=team_settings(group, rules, warnings),
            members=_roster(group, feeding, snapshot.members, users, rules),
        )
    every = list(walk(snapshot.groups))
    desired = Desired(
        teams=teams,
        users=users,
        groups_seen=len(every),
        sources=sources,
        groups_known=frozenset(g.id for g in every),
    )
    return Built(desired=desired, warnings=warnings)


def _roster(
    group: Group,
    sources: list[tuple[Group, Role]],
    members_of: Mapping[str, list[Member]],
    users: dict[str, DesiredUser],
    rules: Rules,
) -> dict[str, Role]:
    """Members by role; admin wins wherever it comes from (the group's
    ``<prefix>admins`` attribute, the admin subgroup, the default role)."""
    admin_usernames = set(group.attributes.get(rules.attribute_prefix + "admins", []))
    roster: dict[str, Role] = {}
    for source, role in sources:
        for member in members_of.get(source.id, []):
            if not member.enabled or member.username.startswith(SERVICE_ACCOUNT_PREFIX):
                continue
            users.setdefault(member.id, DesiredUser(
                member.id, member.username, member.email, member.email_verified
            ))
            member_role: Role = "admin" if member.username in admin_usernames else role
            if roster.get(member.id) != "admin":
                roster[member.id] = member_role
    return roster


# -- team settings ----------------------------------------------------------------


def team_settings(group: Group, rules: Rules, warnings: list[str]) -> TeamSettings:
    """defaults < group attributes < per-path overrides in the configuration.
    A bad attribute is ignored with a warning appended to `warnings`."""
    from_attrs: dict[str, Any] = {}
    for name in SETTING_FIELDS:
        values = group.attributes.get(rules.attribute_prefix + name)
        if not values:
            continue
        try:
            from_attrs[name] = parse_setting(name, values)
        except ValueError as exc:
            warnings.append(
                f"group {group.path}: attribute {rules.attribute_prefix}{name}={values!r} "
                f"ignored ({exc})"
            )
    result = rules.defaults.merged(TeamSettings(**from_attrs))
    override = rules.overrides.get(group.path)
    return result if override is None else result.merged(override)


def settings_of(spec: TeamSettingsSpec) -> TeamSettings:
    """The validated config spec as the frozen TeamSettings (lists as tuples)."""
    values: dict[str, Any] = {}
    for name in SETTING_FIELDS:
        value = getattr(spec, name)
        values[name] = tuple(value) if isinstance(value, list) else value
    return TeamSettings(**values)


def parse_setting(name: str, values: list[str]) -> Any:
    """One group attribute's value, validated exactly as the config file's
    ``teams.defaults`` would be. List settings take every value, each split on
    commas; the others the first value."""
    if _is_list_setting(name):
        raw: Any = [item.strip() for v in values for item in v.split(",") if item.strip()]
    else:
        raw = values[0].strip()
    try:
        spec = TeamSettingsSpec.model_validate({name: raw})
    except ValidationError as exc:
        raise ValueError("; ".join(str(e["msg"]) for e in exc.errors())) from None
    return getattr(settings_of(spec), name)


def _is_list_setting(name: str) -> bool:
    annotation = TeamSettingsSpec.model_fields[name].annotation
    return any(get_origin(a) is list for a in (annotation, *get_args(annotation)))


def walk(groups: Iterable[Group]) -> Iterable[Group]:
    for group in groups:
        yield group
        yield from group.descendants()


def _under(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _truthy(values: list[str] | None) -> bool:
    if not values:
        return False
    return values[0].strip().lower() in ("true", "1", "yes")
