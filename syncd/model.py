"""Small frozen types shared by the readers, the planner and the applier.

`Desired` is what Keycloak says should exist; `Actual` is what LiteLLM holds.
Both are plain data so the planner can be a pure function and tests can build
either side in a few lines. Bookkeeping lives in LiteLLM metadata under the
keys below, which is what makes syncd stateless: any replica, after any crash,
reads the same facts back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Role = Literal["user", "admin"]

# Metadata keys syncd writes. Teams and users carry MANAGED; BLOCKED_AT is the
# departure clock on users and the archival clock on teams; keys syncd blocked
# carry KEY_BLOCKED so a returning user gets back only those, never keys an
# administrator blocked by hand.
MANAGED = "syncd_managed"
GROUP_PATH = "syncd_group_path"
BLOCKED_AT = "syncd_blocked_at"
ARCHIVED_AT = "syncd_archived_at"
KEY_BLOCKED = "syncd_blocked"
# On users whose LiteLLM id is not their Keycloak id (linked users): the
# Keycloak user to re-read before anything destructive.
KEYCLOAK_ID = "syncd_keycloak_id"
# The users.id_from rule a user was created or linked under: a changed rule is
# refused instead of creating a second LiteLLM user for everyone (syncd.identity).
ID_FROM = "syncd_id_from"
# On a departed user whose email syncd gave to someone else (syncd.identity):
# the address it held and when it was released, for the audit trail.
RELEASED_EMAIL = "syncd_released_email"
RELEASED_AT = "syncd_released_at"
SCIM_ACTIVE = "scim_active"  # LiteLLM's own kill switch, honoured at key auth time

# LiteLLM's identity for the master key; auto-added as admin to every team it creates.
DEFAULT_USER_ID = "default_user_id"
PROXY_ADMIN_ROLES = frozenset({"proxy_admin", "proxy_admin_viewer"})


@dataclass(frozen=True)
class TeamSettings:
    """The LiteLLM team fields syncd enforces. `None` means "not managed": syncd
    neither sets nor resets it, so hand-tuned values survive."""

    models: tuple[str, ...] | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None

    def managed_items(self) -> dict[str, Any]:
        """Fields with a value, as LiteLLM request fields (models as a list)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if f.name == "models" else value
        return out

    def drift_from(self, actual: TeamSettings) -> tuple[tuple[str, Any, Any], ...]:
        """(field, old, new) for each managed field whose actual value differs."""
        changes = []
        for f in fields(self):
            want = getattr(self, f.name)
            have = getattr(actual, f.name)
            if want is None:
                continue
            if f.name == "models":
                if have is None or sorted(want) != sorted(have):
                    changes.append((f.name, have, want))
            elif f.name == "max_budget":
                if have is None or abs(float(have) - float(want)) > 1e-9:
                    changes.append((f.name, have, want))
            elif have != want:
                changes.append((f.name, have, want))
        return tuple(changes)

    def merged(self, override: TeamSettings) -> TeamSettings:
        """Fields set in `override` win; others keep this object's value."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for f in fields(override):
            value = getattr(override, f.name)
            if value is not None:
                values[f.name] = value
        return TeamSettings(**values)


# --- desired state (from Keycloak) -----------------------------------------


@dataclass(frozen=True)
class DesiredUser:
    user_id: str  # the Keycloak user UUID, which is also the JWT `sub`
    username: str
    email: str | None
    # Keycloak's emailVerified: only a verified address may link an existing
    # LiteLLM user (users.link_by_email: verified, syncd.identity).
    email_verified: bool = False


@dataclass(frozen=True)
class DesiredTeam:
    team_id: str  # the Keycloak group UUID
    alias: str
    path: str
    settings: TeamSettings
    members: Mapping[str, Role]  # user_id -> role


@dataclass(frozen=True)
class Desired:
    teams: Mapping[str, DesiredTeam]
    users: Mapping[str, DesiredUser]
    groups_seen: int = 0
    # For confirming destructive steps against fresh reads (syncd.evidence):
    # the groups whose members feed each team, and every group id seen.
    sources: Mapping[str, frozenset[str]] = field(default_factory=dict)
    groups_known: frozenset[str] = frozenset()


# --- actual state (from LiteLLM) ---------------------------------------------


@dataclass(frozen=True)
class Team:
    team_id: str
    alias: str | None
    settings: TeamSettings
    members: Mapping[str, Role]  # user_id -> role, from members_with_roles
    metadata: Mapping[str, Any] = field(default_factory=dict)
    blocked: bool = False

    @property
    def managed(self) -> bool:
        return self.metadata.get(MANAGED) is True


@dataclass(frozen=True)
class User:
    user_id: str
    email: str | None = None
    role: str | None = None  # LiteLLM user_role
    metadata: Mapping[str, Any] = field(default_factory=dict)
    alias: str | None = None  # LiteLLM user_alias; syncd keeps it equal to the username

    @property
    def managed(self) -> bool:
        return self.metadata.get(MANAGED) is True

    @property
    def blocked_by_syncd(self) -> bool:
        return BLOCKED_AT in self.metadata

    @property
    def kill_switch_on(self) -> bool:
        return self.metadata.get(SCIM_ACTIVE) is False


@dataclass(frozen=True)
class Key:
    token: str  # LiteLLM's hashed token; the secret itself is never read
    user_id: str | None
    team_id: str | None
    alias: str | None = None
    key_name: str | None = None  # LiteLLM's abbreviation, "sk-...abcd"
    blocked: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How a person recognises the key in a plan: alias, or last four characters."""
        if self.alias:
            return self.alias
        if self.key_name:
            return f"...{self.key_name[-4:]}"
        return f"hash ...{self.token[-4:]}"

    @property
    def blocked_by_syncd(self) -> bool:
        return self.metadata.get(KEY_BLOCKED) is True


@dataclass(frozen=True)
class Actual:
    teams: Mapping[str, Team]
    users: Mapping[str, User]
    keys: Mapping[str, Key]  # by token hash
    # The LiteLLM user syncd's own key acts as (``default_user_id`` for the master
    # key): LiteLLM adds it to every team syncd creates, so it is protected.
    service_user_id: str | None = None

    @property
    def managed_teams(self) -> dict[str, Team]:
        return {tid: t for tid, t in self.teams.items() if t.managed}


@dataclass(frozen=True)
class Scope:
    """The subjects a plan may touch (the event fast path); no scope is everything.

    `users` are Keycloak user ids, `teams` team (group) ids. An operation is in
    scope when its team is, or the Keycloak user behind its LiteLLM user is.
    """

    users: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
