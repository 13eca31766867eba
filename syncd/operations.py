"""Operations as data: what a plan is made of.

Each operation is a frozen dataclass with a stable sort key, so a plan prints
the same way every run, diffs cleanly, and tests compare plans instead of
mocking calls. `PHASE` orders the apply: users and teams exist before members
are added; the kill switch on a departed user is thrown before anything else
destructive; deletions come last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from syncd.evidence import Evidence
from syncd.model import Role, TeamSettings


@dataclass(frozen=True)
class Operation:
    KIND: ClassVar[str] = "operation"
    PHASE: ClassVar[int] = 0
    DESTRUCTIVE: ClassVar[bool] = False
    # Cannot be given back by a later run (deletes something). Every destructive
    # operation carries `evidence`, confirmed by a fresh read before it is applied.
    IRREVERSIBLE: ClassVar[bool] = False

    @property
    def team_id(self) -> str | None:
        return getattr(self, "team", None)

    def ids(self) -> dict[str, str]:
        """The team and user this operation is about, as log fields."""
        return {k: v for k in ("team", "user") if isinstance(v := getattr(self, k, None), str)}

    def sort_key(self) -> tuple[Any, ...]:
        values = tuple(str(getattr(self, f.name)) for f in dataclasses.fields(self))
        return (self.PHASE, self.KIND, *values)

    def subject(self) -> tuple[str, str]:
        """Who a destructive operation affects, for the brake: ("user", id) or
        ("team", id). Key operations affect the key's owner."""
        user = getattr(self, "user", None)
        if isinstance(user, str):
            return ("user", user)
        return ("team", str(getattr(self, "team", "")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.KIND, "destructive": self.DESTRUCTIVE}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, TeamSettings):
                value = value.managed_items()
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, Evidence):
                value = value.describe()
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out


# --- users -------------------------------------------------------------------


@dataclass(frozen=True)
class CreateUser(Operation):
    KIND: ClassVar[str] = "create_user"
    PHASE: ClassVar[int] = 0
    user: str
    email: str | None
    username: str
    # syncd's bookkeeping besides the marker: the Keycloak id and the id_from rule.
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class LinkUser(Operation):
    """Take over a LiteLLM user that existed before syncd (SSO login, made by hand):
    syncd's marker is added to its metadata, every other key is kept, and so are
    its keys, spend and memberships in unmanaged teams. Its own operation so a
    dry run tells the operator who is taken over, and why (``how``)."""

    KIND: ClassVar[str] = "link_user"
    PHASE: ClassVar[int] = 0
    user: str
    username: str  # the Keycloak user it is linked to
    how: str  # "id" (ids match under users.id_from) or "email" (users.link_by_email)
    metadata: Mapping[str, Any]  # the full dict to store (LiteLLM replaces it)


@dataclass(frozen=True)
class UpdateUserProfile(Operation):
    """``user_email`` and ``user_alias`` follow Keycloak (an email or username change).

    Phase 1, after phase 0: LiteLLM's /user/update writes the stored metadata back
    when none is sent, so it must not run at the same time as a metadata write of
    the same user (LinkUser, UnblockUser, UpdateUserMetadata).
    """

    KIND: ClassVar[str] = "update_user_profile"
    PHASE: ClassVar[int] = 1
    user: str
    changes: tuple[tuple[str, Any, Any], ...]  # (field, old, new): user_email, user_alias


@dataclass(frozen=True)
class UpdateUserMetadata(Operation):
    """Adopt an existing LiteLLM user (mark it managed) or clear stale bookkeeping."""

    KIND: ClassVar[str] = "update_user_metadata"
    PHASE: ClassVar[int] = 0
    user: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class UnblockUser(Operation):
    """A returning user: lift the kill switch; their keys follow in UnblockKey."""

    KIND: ClassVar[str] = "unblock_user"
    PHASE: ClassVar[int] = 0
    user: str
    metadata: Mapping[str, Any]


# --- teams -------------------------------------------------------------------


@dataclass(frozen=True)
class CreateTeam(Operation):
    KIND: ClassVar[str] = "create_team"
    PHASE: ClassVar[int] = 1
    team: str
    alias: str
    settings: TeamSettings
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class UpdateTeam(Operation):
    """Fix alias/settings drift and syncd's metadata keys; other metadata is kept."""

    KIND: ClassVar[str] = "update_team"
    PHASE: ClassVar[int] = 1
    team: str
    changes: tuple[tuple[str, Any, Any], ...]  # (field, old, new)
    metadata: Mapping[str, Any]  # the full dict to store (LiteLLM replaces it)


@dataclass(frozen=True)
class UnblockTeam(Operation):
    KIND: ClassVar[str] = "unblock_team"
    PHASE: ClassVar[int] = 1
    team: str
    metadata: Mapping[str, Any]


# --- memberships -------------------------------------------------------------


@dataclass(frozen=True)
class AddMember(Operation):
    KIND: ClassVar[str] = "add_member"
    PHASE: ClassVar[int] = 2
    team: str
    user: str
    role: Role
    email: str | None = None


@dataclass(frozen=True)
class ChangeMemberRole(Operation):
    KIND: ClassVar[str] = "change_member_role"
    PHASE: ClassVar[int] = 2
    team: str
    user: str
    old: Role
    new: Role


# --- keys of returning users ---------------------------------------------------


@dataclass(frozen=True)
class UnblockKey(Operation):
    """Only for keys carrying syncd's marker; hand-blocked keys stay blocked."""

    KIND: ClassVar[str] = "unblock_key"
    PHASE: ClassVar[int] = 3
    token: str
    user: str
    label: str
    unblock: bool  # False: already unblocked, only the marker is left to clear
    metadata: Mapping[str, Any]


# --- destructive ---------------------------------------------------------------


@dataclass(frozen=True)
class BlockUser(Operation):
    """Kill switch: ``scim_active: false`` rejects all the user's keys at once."""

    KIND: ClassVar[str] = "block_user"
    PHASE: ClassVar[int] = 4
    DESTRUCTIVE: ClassVar[bool] = True
    user: str
    reason: str
    metadata: Mapping[str, Any]
    evidence: Evidence


@dataclass(frozen=True)
class RemoveMember(Operation):
    KIND: ClassVar[str] = "remove_member"
    PHASE: ClassVar[int] = 5
    DESTRUCTIVE: ClassVar[bool] = True
    IRREVERSIBLE: ClassVar[bool] = True
    team: str
    user: str
    reason: str
    evidence: Evidence


@dataclass(frozen=True)
class DeleteKey(Operation):
    KIND: ClassVar[str] = "delete_key"
    PHASE: ClassVar[int] = 6
    DESTRUCTIVE: ClassVar[bool] = True
    IRREVERSIBLE: ClassVar[bool] = True
    token: str
    user: str
    team: str | None
    label: str
    reason: str
    evidence: Evidence


@dataclass(frozen=True)
class BlockKey(Operation):
    KIND: ClassVar[str] = "block_key"
    PHASE: ClassVar[int] = 7
    DESTRUCTIVE: ClassVar[bool] = True
    token: str
    user: str
    team: str | None
    label: str
    reason: str
    metadata: Mapping[str, Any]  # with syncd's marker, written before the block
    evidence: Evidence


@dataclass(frozen=True)
class BlockTeam(Operation):
    KIND: ClassVar[str] = "block_team"
    PHASE: ClassVar[int] = 8
    DESTRUCTIVE: ClassVar[bool] = True
    team: str
    reason: str
    metadata: Mapping[str, Any]
    evidence: Evidence


@dataclass(frozen=True)
class DeleteTeam(Operation):
    KIND: ClassVar[str] = "delete_team"
    PHASE: ClassVar[int] = 9
    DESTRUCTIVE: ClassVar[bool] = True
    IRREVERSIBLE: ClassVar[bool] = True
    team: str
    reason: str
    evidence: Evidence


@dataclass(frozen=True)
class DeleteUser(Operation):
    KIND: ClassVar[str] = "delete_user"
    PHASE: ClassVar[int] = 10
    DESTRUCTIVE: ClassVar[bool] = True
    IRREVERSIBLE: ClassVar[bool] = True
    user: str
    reason: str
    evidence: Evidence


ALL_KINDS: tuple[type[Operation], ...] = (
    CreateUser,
    LinkUser,
    UpdateUserProfile,
    UpdateUserMetadata,
    UnblockUser,
    CreateTeam,
    UpdateTeam,
    UnblockTeam,
    AddMember,
    ChangeMemberRole,
    UnblockKey,
    BlockUser,
    RemoveMember,
    DeleteKey,
    BlockKey,
    BlockTeam,
    DeleteTeam,
    DeleteUser,
)
