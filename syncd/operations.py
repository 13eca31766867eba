"""Operations as data: what a plan is made of.

Each operation is a frozen dataclass with a stable sort key, so a plan prints
the same way every run, diffs cleanly, and tests compare plans instead of
mocking calls. `PHASE` orders the apply: users and teams exist before members
are added; the kill switch on a departed user is thrown before anything else
destructive; deletions come next, and an address released from a departed
user moves last, once that user is cut off.

The set is closed: `Op` is the union of every concrete operation, and each
``match`` over it ends in ``assert_never``, so a new operation that one
consumer forgets is a type error, not a surprise at run time. Every operation
names the team and user it is about as ``team_id`` / ``user_id`` (None when it
is about no team or no user), the same words the model uses, and describes
itself, so the applier can log it without depending on the report layer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias, get_args

from syncd.evidence import Evidence
from syncd.model import Actual, Desired, Role, TeamSettings

# Why a destructive operation is planned, for code that must tell causes apart
# (the report lists a key deleted because its owner left one team under that
# team, a departed user's keys under the user). `reason` is the same for people.
Cause = Literal[
    "left_group",  # still in other selected groups, no longer in this one
    "not_in_group",  # a user syncd does not manage, not in the team's group
    "departed",  # disabled, deleted, or in no selected group: cut off reversibly
    "departed_grace_over",  # departed, and the departure grace period is over
    "group_gone",  # the team's group is deleted or no longer selected
]


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable copy of JSON-like data (LiteLLM metadata).

    Operations are frozen dataclasses, and a frozen dataclass is only hashable
    if its fields are: a ``dict`` field made ``hash(op)`` raise. Nested dicts
    become FrozenMaps and lists tuples, so the whole value is immutable;
    `thaw` gives back plain dicts and lists for JSON.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = {str(k): freeze(v) for k, v in (data or {}).items()}
        self._hash: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


def freeze(value: Any) -> Any:
    """`value` with every dict, list and set replaced by a hashable equivalent."""
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return FrozenMap(value)
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set):
        return frozenset(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The JSON form of a frozen value: FrozenMaps as dicts, tuples as lists."""
    if isinstance(value, FrozenMap):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass
class Names:
    """Lookups that turn ids into something a person recognises."""

    teams: dict[str, str] = field(default_factory=dict)  # team_id -> "alias (path)"
    users: dict[str, str] = field(default_factory=dict)  # user_id -> username or email

    @classmethod
    def from_states(cls, desired: Desired, actual: Actual) -> Names:
        names = cls()
        for tid, team in actual.teams.items():
            names.teams[tid] = team.alias or tid
        for tid, dteam in desired.teams.items():
            names.teams[tid] = f"{dteam.alias} ({dteam.path})" if dteam.alias != dteam.path \
                else dteam.path
        for uid, user in actual.users.items():
            if user.email:
                names.users[uid] = user.email
        for uid, duser in desired.users.items():
            names.users[uid] = duser.username
        return names

    def team(self, team_id: str | None) -> str:
        if team_id is None:
            return "(no team)"
        return self.teams.get(team_id, team_id)

    def user(self, user_id: str) -> str:
        return self.users.get(user_id, user_id)


_NO_NAMES = Names()


def _fmt(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return json.dumps(thaw(value))
    return json.dumps(value) if isinstance(value, str) else str(value)


def _changes(changes: tuple[tuple[str, Any, Any], ...]) -> str:
    return "; ".join(f"{name}: {_fmt(old)} -> {_fmt(new)}" for name, old, new in changes)


@dataclass(frozen=True)
class Operation:
    KIND: ClassVar[str] = "operation"
    PHASE: ClassVar[int] = 0
    DESTRUCTIVE: ClassVar[bool] = False
    # Cannot be given back by a later run (deletes something). Every destructive
    # operation carries `evidence`, confirmed by a fresh read before it is applied.
    IRREVERSIBLE: ClassVar[bool] = False

    def __post_init__(self) -> None:
        # Callers pass plain dicts; stored frozen so `hash(op)` holds for every op.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            frozen = freeze(value)
            if frozen is not value:
                object.__setattr__(self, f.name, frozen)

    def ids(self) -> dict[str, str]:
        """The team and user this operation is about, as log fields."""
        return {
            k: v for k in ("team_id", "user_id") if isinstance(v := getattr(self, k, None), str)
        }

    def sort_key(self) -> tuple[Any, ...]:
        values = tuple(str(getattr(self, f.name)) for f in dataclasses.fields(self))
        return (self.PHASE, self.KIND, *values)

    def subject(self) -> tuple[str, str]:
        """Who a destructive operation affects, for the brake: ("user", id) or
        ("team", id). Key operations affect the key's owner."""
        user_id = getattr(self, "user_id", None)
        if isinstance(user_id, str):
            return ("user", user_id)
        return ("team", str(getattr(self, "team_id", "")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.KIND, "destructive": self.DESTRUCTIVE}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, TeamSettings):
                value = value.managed_items()
            elif isinstance(value, Evidence):
                value = value.describe()
            else:
                value = thaw(value)
            out[f.name] = value
        return out


# Every concrete operation has `team_id` and `user_id`: a field, or a class-level
# None for the side it is not about, so readers need no getattr or isinstance.
# (Not declared on `Operation`: a base attribute would become the fields' default.)

# --- users -------------------------------------------------------------------


@dataclass(frozen=True)
class CreateUser(Operation):
    KIND: ClassVar[str] = "create_user"
    PHASE: ClassVar[int] = 0
    team_id: ClassVar[None] = None
    user_id: str
    email: str | None
    username: str
    # syncd's bookkeeping besides the marker: the Keycloak id and the id_from rule.
    metadata: Mapping[str, Any] = field(default_factory=FrozenMap)

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"create user {self.username} <{self.email or 'no email'}>"


@dataclass(frozen=True)
class LinkUser(Operation):
    """Take over a LiteLLM user that existed before syncd (SSO login, made by hand):
    syncd's marker is added to its metadata, every other key is kept, and so are
    its keys, spend and memberships in unmanaged teams. Its own operation so a
    dry run tells the operator who is taken over, and why (``how``)."""

    KIND: ClassVar[str] = "link_user"
    PHASE: ClassVar[int] = 0
    team_id: ClassVar[None] = None
    user_id: str
    username: str  # the Keycloak user it is linked to
    how: str  # "id" (ids match under users.id_from) or "email" (users.link_by_email)
    metadata: Mapping[str, Any]  # the full dict to store (LiteLLM replaces it)

    def describe(self, names: Names = _NO_NAMES) -> str:
        why = "ids match under users.id_from" if self.how == "id" else \
            "same email, users.link_by_email"
        return (f"link existing LiteLLM user {self.user_id} to Keycloak user {self.username} "
                f"({why}; keys, spend and other teams kept)")


@dataclass(frozen=True)
class UpdateUserProfile(Operation):
    """``user_email`` and ``user_alias`` follow Keycloak (an email or username change).

    Phase 1, after phase 0: LiteLLM's /user/update writes the stored metadata back
    when none is sent, so it must not run at the same time as a metadata write of
    the same user (LinkUser, UnblockUser, UpdateUserMetadata).
    """

    KIND: ClassVar[str] = "update_user_profile"
    PHASE: ClassVar[int] = 1
    team_id: ClassVar[None] = None
    user_id: str
    changes: tuple[tuple[str, Any, Any], ...]  # (field, old, new): user_email, user_alias

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"update user {names.user(self.user_id)}: " + _changes(self.changes)


@dataclass(frozen=True)
class UpdateUserMetadata(Operation):
    """Adopt an existing LiteLLM user (mark it managed) or clear stale bookkeeping."""

    KIND: ClassVar[str] = "update_user_metadata"
    PHASE: ClassVar[int] = 0
    team_id: ClassVar[None] = None
    user_id: str
    metadata: Mapping[str, Any]

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"mark user {names.user(self.user_id)} as managed by syncd"


@dataclass(frozen=True)
class UnblockUser(Operation):
    """A returning user: lift the kill switch; their keys follow in UnblockKey."""

    KIND: ClassVar[str] = "unblock_user"
    PHASE: ClassVar[int] = 0
    team_id: ClassVar[None] = None
    user_id: str
    metadata: Mapping[str, Any]

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"restore access of returning user {names.user(self.user_id)} (scim_active: true)"


# --- teams -------------------------------------------------------------------


@dataclass(frozen=True)
class CreateTeam(Operation):
    KIND: ClassVar[str] = "create_team"
    PHASE: ClassVar[int] = 1
    user_id: ClassVar[None] = None
    team_id: str
    alias: str
    settings: TeamSettings
    metadata: Mapping[str, Any]

    def describe(self, names: Names = _NO_NAMES) -> str:
        settings = ", ".join(f"{k}={_fmt(v)}" for k, v in self.settings.managed_items().items())
        return f"create team {self.alias}" + (f" with {settings}" if settings else "")


@dataclass(frozen=True)
class UpdateTeam(Operation):
    """Fix alias/settings drift and syncd's metadata keys; other metadata is kept."""

    KIND: ClassVar[str] = "update_team"
    PHASE: ClassVar[int] = 1
    user_id: ClassVar[None] = None
    team_id: str
    changes: tuple[tuple[str, Any, Any], ...]  # (field, old, new)
    metadata: Mapping[str, Any]  # the full dict to store (LiteLLM replaces it)

    def describe(self, names: Names = _NO_NAMES) -> str:
        return "update team: " + _changes(self.changes)


@dataclass(frozen=True)
class UnblockTeam(Operation):
    KIND: ClassVar[str] = "unblock_team"
    PHASE: ClassVar[int] = 1
    user_id: ClassVar[None] = None
    team_id: str
    metadata: Mapping[str, Any]

    def describe(self, names: Names = _NO_NAMES) -> str:
        return "unblock team (its group is selected again)"


# --- memberships -------------------------------------------------------------


@dataclass(frozen=True)
class AddMember(Operation):
    KIND: ClassVar[str] = "add_member"
    PHASE: ClassVar[int] = 2
    team_id: str
    user_id: str
    role: Role
    email: str | None = None

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"add member {names.user(self.user_id)} as {self.role}"


@dataclass(frozen=True)
class ChangeMemberRole(Operation):
    KIND: ClassVar[str] = "change_member_role"
    PHASE: ClassVar[int] = 2
    team_id: str
    user_id: str
    old: Role
    new: Role

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"change role of {names.user(self.user_id)}: {self.old} -> {self.new}"


# --- keys of returning users ---------------------------------------------------


@dataclass(frozen=True)
class UnblockKey(Operation):
    """Only for keys carrying syncd's marker; hand-blocked keys stay blocked."""

    KIND: ClassVar[str] = "unblock_key"
    PHASE: ClassVar[int] = 3
    team_id: ClassVar[None] = None  # listed with its owner, whatever team it is bound to
    token: str
    user_id: str
    label: str
    unblock: bool  # False: already unblocked, only the marker is left to clear
    metadata: Mapping[str, Any]

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"unblock key {self.label} of {names.user(self.user_id)} (blocked by syncd)"


# --- destructive ---------------------------------------------------------------


def _key_where(team_id: str | None, names: Names) -> str:
    return f"team {names.team(team_id)}" if team_id else "personal key"


@dataclass(frozen=True)
class BlockUser(Operation):
    """Kill switch: ``scim_active: false`` rejects all the user's keys at once."""

    KIND: ClassVar[str] = "block_user"
    PHASE: ClassVar[int] = 4
    DESTRUCTIVE: ClassVar[bool] = True
    team_id: ClassVar[None] = None
    user_id: str
    cause: Cause
    reason: str
    metadata: Mapping[str, Any]
    evidence: Evidence

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"block user {names.user(self.user_id)}: scim_active false ({self.reason})"


@dataclass(frozen=True)
class RemoveMember(Operation):
    KIND: ClassVar[str] = "remove_member"
    PHASE: ClassVar[int] = 5
    DESTRUCTIVE: ClassVar[bool] = True
    IRREVERSIBLE: ClassVar[bool] = True
    team_id: str
    user_id: str
    cause: Cause
    reason: str
    evidence: Evidence

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"remove member {names.user(self.user_id)} ({self.reason})"


@dataclass(frozen=True)
class DeleteKey(Operation):
    KIND: ClassVar[str] = "delete_key"
    PHASE: ClassVar[int] = 6
    DESTRUCTIVE: ClassVar[bool] = True
    IRREVERSIBLE: ClassVar[bool] = True
    token: str
    user_id: str
    team_id: str | None
    label: str
    cause: Cause
    reason: str
    evidence: Evidence

    def describe(self, names: Names = _NO_NAMES) -> str:
        return (f"delete key {self.label} of {names.user(self.user_id)}, "
                f"{_key_where(self.team_id, names)} ({self.reason})")


@dataclass(frozen=True)
class BlockKey(Operation):
    KIND: ClassVar[str] = "block_key"
    PHASE: ClassVar[int] = 7
    DESTRUCTIVE: ClassVar[bool] = True
    token: str
    user_id: str
    team_id: str | None
    label: str
    cause: Cause
    reason: str
    metadata: Mapping[str, Any]  # with syncd's marker, written before the block
    evidence: Evidence

    def describe(self, names: Names = _NO_NAMES) -> str:
        return (f"block key {self.label} of {names.user(self.user_id)}, "
                f"{_key_where(self.team_id, names)} ({self.reason})")


@dataclass(frozen=True)
class BlockTeam(Operation):
    KIND: ClassVar[str] = "block_team"
    PHASE: ClassVar[int] = 8
    DESTRUCTIVE: ClassVar[bool] = True
    user_id: ClassVar[None] = None
    team_id: str
    cause: Cause
    reason: str
    metadata: Mapping[str, Any]
    evidence: Evidence

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"block team ({self.reason})"


@dataclass(frozen=True)
class DeleteTeam(Operation):
    KIND: ClassVar[str] = "delete_team"
    PHASE: ClassVar[int] = 9
    DESTRUCTIVE: ClassVar[bool] = True
    IRREVERSIBLE: ClassVar[bool] = True
    user_id: ClassVar[None] = None
    team_id: str
    cause: Cause
    reason: str
    evidence: Evidence

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"delete team ({self.reason})"


@dataclass(frozen=True)
class DeleteUser(Operation):
    KIND: ClassVar[str] = "delete_user"
    PHASE: ClassVar[int] = 10
    DESTRUCTIVE: ClassVar[bool] = True
    IRREVERSIBLE: ClassVar[bool] = True
    team_id: ClassVar[None] = None
    user_id: str
    cause: Cause
    reason: str
    evidence: Evidence

    def describe(self, names: Names = _NO_NAMES) -> str:
        return f"delete user {names.user(self.user_id)} and all their keys ({self.reason})"


@dataclass(frozen=True)
class ReleaseEmail(Operation):
    """Move an address from a departed user syncd owns to the Keycloak user who has
    it now (a reused address): clear it on the departed user, keeping it in that
    user's metadata (``syncd_released_email``) with the kill switch, then give it
    to the new holder.

    Destructive: it changes a user who is not here to see it, so a fresh read
    must show that Keycloak user deleted, disabled, or without this address
    (`UserOutside.email`). The new holder never waits for it: they were created
    or linked without the address earlier in the run, with their teams. Last
    phase: after the departed user's kill switch and keys (its keys stay blocked),
    and never after a DeleteUser of the same user (the planner plans none then:
    LiteLLM's /user/update would re-create a deleted user)."""

    KIND: ClassVar[str] = "release_email"
    PHASE: ClassVar[int] = 11
    DESTRUCTIVE: ClassVar[bool] = True
    team_id: ClassVar[None] = None
    user_id: str  # the departed LiteLLM user that holds the address
    email: str  # the address as that user holds it (kept in its metadata)
    to_user_id: str  # the LiteLLM user of the Keycloak user who has it now
    to_email: str  # the address as Keycloak spells it for them
    metadata: Mapping[str, Any]  # the departed user's full dict (LiteLLM replaces it)
    evidence: Evidence

    def ids(self) -> dict[str, str]:
        return {**super().ids(), "to_user_id": self.to_user_id}

    def describe(self, names: Names = _NO_NAMES) -> str:
        return (f"release email {self.email} from departed user {names.user(self.user_id)} "
                f"(kept in its metadata; its keys stay blocked) and give it to "
                f"{names.user(self.to_user_id)}")


Op: TypeAlias = (
    CreateUser
    | LinkUser
    | UpdateUserProfile
    | UpdateUserMetadata
    | UnblockUser
    | CreateTeam
    | UpdateTeam
    | UnblockTeam
    | AddMember
    | ChangeMemberRole
    | UnblockKey
    | BlockUser
    | RemoveMember
    | DeleteKey
    | BlockKey
    | BlockTeam
    | DeleteTeam
    | DeleteUser
    | ReleaseEmail
)

# Every operation class, for code that enumerates them (metrics start each kind at 0).
ALL_KINDS: tuple[type[Op], ...] = get_args(Op)
