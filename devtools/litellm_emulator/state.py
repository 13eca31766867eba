"""In-memory tables of the emulated proxy: what LiteLLM keeps in PostgreSQL.

Membership lives in three places in the real schema and the emulator keeps all
three so tests can catch syncd leaving them out of step:

* ``TeamRow.members_with_roles`` (``LiteLLM_TeamTable.members_with_roles``),
  the roster the proxy treats as the truth for who is on a team;
* ``UserRow.teams`` (``LiteLLM_UserTable.teams``), what a user sees;
* ``MembershipRow`` per (user_id, team_id) (``LiteLLM_TeamMembership``), which
  carries per-member budgets.

``State.consistency_problems`` reports every place they disagree.

All rows are plain dataclasses; every read or write goes through ``State.lock``
(a re-entrant threading lock) so the background server thread and a test
thread that inspects state directly never see a half-applied change.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

ADMIN_USER_ID = "default_user_id"
"""``litellm.constants.LITELLM_PROXY_ADMIN_NAME``: the user id the master key acts as."""

UI_TEAM_ID = "litellm-dashboard"
"""``litellm.constants.UI_TEAM_ID``: reserved for UI session keys."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class TeamRow:
    """One ``LiteLLM_TeamTable`` row. ``extra`` holds columns syncd never reads."""

    team_id: str
    team_alias: str | None = None
    organization_id: str | None = None
    members_with_roles: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    max_budget: float | None = None
    soft_budget: float | None = None
    budget_duration: str | None = None
    budget_reset_at: datetime | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    blocked: bool = False
    spend: float = 0.0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """The row as the proxy's ORM would return it (``extra`` flattened in)."""
        row = asdict(self)
        extra = row.pop("extra")
        return {**extra, **row}

    def member_user_ids(self) -> list[str]:
        return [m["user_id"] for m in self.members_with_roles if m.get("user_id") is not None]


@dataclass
class UserRow:
    """One ``LiteLLM_UserTable`` row."""

    user_id: str
    user_email: str | None = None
    user_alias: str | None = None
    user_role: str | None = None
    teams: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    models: list[Any] = field(default_factory=list)
    max_budget: float | None = None
    budget_duration: str | None = None
    budget_reset_at: datetime | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    sso_user_id: str | None = None
    spend: float = 0.0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        extra = row.pop("extra")
        return {**extra, **row}


@dataclass
class KeyRow:
    """One ``LiteLLM_VerificationToken`` row; ``token`` is sha256 hex of the ``sk-`` key."""

    token: str
    key_name: str | None = None
    key_alias: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    blocked: bool | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    expires: datetime | None = None
    models: list[Any] = field(default_factory=list)
    max_budget: float | None = None
    budget_duration: str | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    spend: float = 0.0
    created_by: str | None = None
    updated_by: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        extra = row.pop("extra")
        return {**extra, **row}


@dataclass
class MembershipRow:
    """One ``LiteLLM_TeamMembership`` row; ``budget`` stands in for its budget-table link."""

    user_id: str
    team_id: str
    spend: float = 0.0
    budget_id: str | None = None
    budget: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeletedKeyRow:
    """``LiteLLM_DeletedVerificationToken``: what ``/key/info`` reports as status "deleted"."""

    key: KeyRow
    deleted_at: datetime
    deleted_by: str | None
    deleted_by_api_key: str | None = None
    litellm_changed_by: str | None = None


@dataclass
class DeletedTeamRow:
    """``LiteLLM_DeletedTeamTable``: what ``/v2/team/list?status=deleted`` reads."""

    team: TeamRow
    deleted_at: datetime
    deleted_by: str | None
    litellm_changed_by: str | None = None


@dataclass
class AuditEntry:
    """One write the emulator processed, kept so tests can check every write was attributed."""

    at: datetime
    method: str
    path: str
    status: int
    changed_by: str | None
    query: str = ""


class State:
    """All tables plus the lock guarding them."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.teams: dict[str, TeamRow] = {}
        self.users: dict[str, UserRow] = {}
        self.keys: dict[str, KeyRow] = {}
        self.memberships: dict[tuple[str, str], MembershipRow] = {}
        self.deleted_keys: list[DeletedKeyRow] = []
        self.deleted_teams: list[DeletedTeamRow] = []
        self.audit: list[AuditEntry] = []

    def clear(self) -> None:
        with self.lock:
            self.teams.clear()
            self.users.clear()
            self.keys.clear()
            self.memberships.clear()
            self.deleted_keys.clear()
            self.deleted_teams.clear()
            self.audit.clear()

    # -- membership bookkeeping -------------------------------------------------

    def ensure_user(self, user_id: str, *, user_email: str | None = None) -> tuple[UserRow, bool]:
        """Upsert the way ``add_new_member`` does: create with internal-user defaults.

        Returns the row and whether it was created. An existing row is left
        untouched (the real upsert's update branch is empty).
        """
        with self.lock:
            existing = self.users.get(user_id)
            if existing is not None:
                return existing, False
            row = UserRow(user_id=user_id, user_email=user_email, user_role="internal_user")
            self.users[user_id] = row
            return row, True

    def link_user_to_team(self, user_id: str, team_id: str) -> MembershipRow:
        """Append ``team_id`` to ``user.teams`` if absent and upsert the membership row."""
        with self.lock:
            user = self.users[user_id]
            if team_id not in user.teams:
                user.teams.append(team_id)
                user.updated_at = utcnow()
            key = (user_id, team_id)
            membership = self.memberships.get(key)
            if membership is None:
                membership = MembershipRow(user_id=user_id, team_id=team_id)
                self.memberships[key] = membership
            return membership

    def unlink_user_from_team(self, user_id: str, team_id: str) -> None:
        """Drop ``team_id`` from ``user.teams`` and delete the membership row."""
        with self.lock:
            user = self.users.get(user_id)
            if user is not None and team_id in user.teams:
                user.teams = [t for t in user.teams if t != team_id]
                user.updated_at = utcnow()
            self.memberships.pop((user_id, team_id), None)

    def delete_keys(
        self,
        tokens: list[str],
        *,
        archive: bool,
        deleted_by: str | None,
        changed_by: str | None,
    ) -> list[KeyRow]:
        """Hard-delete keys; ``archive`` mirrors ``persist_deleted_verification_tokens``."""
        removed: list[KeyRow] = []
        with self.lock:
            now = utcnow()
            for token in tokens:
                row = self.keys.pop(token, None)
                if row is None:
                    continue
                removed.append(row)
                if archive:
                    self.deleted_keys.append(
                        DeletedKeyRow(
                            key=row,
                            deleted_at=now,
                            deleted_by=deleted_by,
                            deleted_by_api_key=None,
                            litellm_changed_by=changed_by,
                        )
                    )
        return removed

    def find_deleted_key(self, token: str) -> DeletedKeyRow | None:
        with self.lock:
            for row in reversed(self.deleted_keys):
                if row.key.token == token:
                    return row
        return None

    # -- inspection -------------------------------------------------------------

    def consistency_problems(self) -> list[str]:
        """Every disagreement between roster, ``user.teams`` and membership rows."""
        problems: list[str] = []
        with self.lock:
            for team in self.teams.values():
                for user_id in team.member_user_ids():
                    user = self.users.get(user_id)
                    if user is None:
                        problems.append(f"team {team.team_id}: roster names missing user {user_id}")
                        continue
                    if team.team_id not in user.teams:
                        problems.append(
                            f"team {team.team_id}: {user_id} rostered but not in user.teams"
                        )
                    if (user_id, team.team_id) not in self.memberships:
                        problems.append(
                            f"team {team.team_id}: {user_id} rostered without membership row"
                        )
            for user in self.users.values():
                for team_id in user.teams:
                    listed = self.teams.get(team_id)
                    if listed is None:
                        problems.append(
                            f"user {user.user_id}: user.teams names missing team {team_id}"
                        )
                    elif user.user_id not in listed.member_user_ids():
                        problems.append(
                            f"user {user.user_id}: team {team_id} in user.teams, not rostered"
                        )
            for user_id, team_id in self.memberships:
                owner = self.teams.get(team_id)
                if owner is None or user_id not in owner.member_user_ids():
                    problems.append(f"membership ({user_id}, {team_id}) without roster entry")
        return problems

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready dump of every table, for ``GET /_emulator/state``."""

        def plain(value: Any) -> Any:
            if isinstance(value, datetime):
                return _iso(value)
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            return value

        with self.lock:
            return {
                "teams": [plain(t.to_row()) for t in self.teams.values()],
                "users": [plain(u.to_row()) for u in self.users.values()],
                "keys": [plain(k.to_row()) for k in self.keys.values()],
                "memberships": [plain(m.to_row()) for m in self.memberships.values()],
                "deleted_keys": [
                    plain(
                        {
                            **d.key.to_row(),
                            "deleted_at": d.deleted_at,
                            "deleted_by": d.deleted_by,
                            "litellm_changed_by": d.litellm_changed_by,
                        }
                    )
                    for d in self.deleted_keys
                ],
                "deleted_teams": [
                    plain(
                        {**d.team.to_row(), "deleted_at": d.deleted_at, "deleted_by": d.deleted_by}
                    )
                    for d in self.deleted_teams
                ],
                "audit": [plain(asdict(a)) for a in self.audit],
                "consistency_problems": self.consistency_problems(),
            }
