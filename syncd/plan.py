"""The pure planner: (desired, actual, policy) -> Plan. No I/O, no clock.

Like ldap2pg's diff, it looks at *all* LiteLLM teams to create and adopt, but
only at *managed* ones (syncd's marker) to change or remove, so teams made by
hand are never touched. Time comes in through `Policy.now`, which keeps the
function deterministic and the grace periods testable.

Rules, in the words a security team uses:
- a member who left one group but is still in others is removed from that
  team, and their keys bound to it are deleted (LiteLLM 1.110.2's member_delete
  deletes them itself): the one irreversible step outside a grace period;
- a departed user (disabled, deleted, or in no selected group) who carries
  syncd's marker gets LiteLLM's kill switch (``scim_active: false``) and every
  unblocked key blocked with syncd's marker. Memberships and keys stay, so a
  return within the grace period gives back exactly what they had. Only under
  the ``delete`` policy, after the grace period, are memberships removed and
  keys (and optionally the user) deleted;
- a returning user gets the kill switch lifted and only syncd-blocked keys back;
- a managed team whose group is gone or deselected is blocked; its members and
  keys stay. Under ``delete`` it is deleted after the grace period;
- a LiteLLM user without syncd's marker in a managed team, who is not in the
  group, is removed from that team and nothing else of theirs is touched;
- never touched: unmanaged teams, proxy admins, ``default_user_id``, keys
  without a user, keys of users who were never members, users on the ignore list.

Every destructive operation carries the claim that justifies it
(`syncd.evidence`), which a fresh read confirms before it is applied.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from syncd.evidence import GroupGone, UserOutside
from syncd.identity import IdFrom, LinkByEmail, owner, resolve
from syncd.model import (
    ARCHIVED_AT,
    BLOCKED_AT,
    DEFAULT_USER_ID,
    GROUP_PATH,
    KEY_BLOCKED,
    MANAGED,
    PROXY_ADMIN_ROLES,
    RELEASED_AT,
    RELEASED_EMAIL,
    SCIM_ACTIVE,
    Actual,
    Desired,
    DesiredTeam,
    Key,
    Role,
    Scope,
    Team,
    User,
)
from syncd.operations import (
    AddMember,
    BlockKey,
    BlockTeam,
    BlockUser,
    Cause,
    ChangeMemberRole,
    CreateTeam,
    CreateUser,
    DeleteKey,
    DeleteTeam,
    DeleteUser,
    LinkUser,
    Op,
    ReleaseEmail,
    RemoveMember,
    UnblockKey,
    UnblockTeam,
    UnblockUser,
    UpdateTeam,
    UpdateUserMetadata,
    UpdateUserProfile,
)


@dataclass(frozen=True, kw_only=True)
class Policy:
    """What the planner needs from the configuration, as plain values.

    No defaults: the configuration owns them (``syncd.config``), and a second
    copy here would drift. ``syncd.reconciler.policy_from`` builds one from Settings.
    """

    now: datetime
    adopt_existing: bool
    enterprise_license: bool
    departure_policy: Literal["block", "delete"]
    departure_grace: timedelta
    delete_users: bool
    removed_team_policy: Literal["block", "delete"]
    removed_team_grace: timedelta
    ignore_users: frozenset[str]  # LiteLLM user ids or emails
    id_from: IdFrom  # users.id_from: the LiteLLM user_id of a Keycloak user
    link_by_email: LinkByEmail  # users.link_by_email (syncd.identity)
    # The brake counts people and teams, not API calls (see `brake`).
    max_blocked: int
    max_blocked_fraction: float
    max_deleted: int
    max_deleted_fraction: float
    fraction_from_memberships: int
    brake_released: bool  # --force: lift the brake for one run


@dataclass(frozen=True)
class Skipped:
    team_id: str
    reason: str


@dataclass(frozen=True)
class Plan:
    operations: tuple[Op, ...]
    held_back: tuple[Op, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()
    managed_memberships: int = 0
    brake_reason: str | None = None
    # Destructive operations a fresh read did not confirm, with the reason;
    # filled in by `syncd.confirm` just before applying.
    unconfirmed: tuple[tuple[Op, str], ...] = ()
    # Keycloak users left out, without a LiteLLM user, for an identity collision
    # (the run exits 9); their warnings are in `warnings` (syncd.identity).
    unresolved_identities: int = 0
    # Keycloak users synced with their teams but without the email Keycloak gives
    # them (shared, or held by a LiteLLM user syncd must not take it from).
    withheld_emails: int = 0

    @property
    def braked(self) -> bool:
        return bool(self.held_back)

    @property
    def destructive_count(self) -> int:
        return sum(op.DESTRUCTIVE for op in self.operations) + len(self.held_back)

    def __bool__(self) -> bool:
        return bool(self.operations or self.held_back)


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(value: Any) -> datetime | None:
    """Read back a clock syncd wrote; anything unreadable counts as "just now",
    so a corrupted stamp delays a deletion instead of hastening it."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _grace_over(stamp: Any, now: datetime, grace: timedelta) -> bool:
    when = parse_stamp(stamp)
    return when is not None and now - when >= grace


class _Planner:
    def __init__(self, desired: Desired, actual: Actual, policy: Policy) -> None:
        # Keycloak users as LiteLLM users (users.id_from, links, collisions): from
        # here on `desired` is keyed by LiteLLM user id.
        self.identities = resolve(
            desired, actual, policy.id_from, policy.link_by_email, _untouchable(actual, policy)
        )
        self.desired = self.identities.desired
        self.actual = actual
        self.policy = policy
        self.now = _stamp(policy.now)
        self.ops: list[Op] = []
        self.skipped: list[Skipped] = []
        self.warnings: list[str] = list(self.identities.warnings)
        self.keys_by_user: dict[str, list[Key]] = defaultdict(list)
        self.keys_by_team: dict[str, list[Key]] = defaultdict(list)
        for key in sorted(actual.keys.values(), key=lambda k: k.token):
            if key.user_id:
                self.keys_by_user[key.user_id].append(key)
            if key.team_id:
                self.keys_by_team[key.team_id].append(key)
        # Keys deleted by this plan are not also blocked or unblocked.
        self.revoked: set[str] = set()
        self.managed = actual.managed_teams
        self._protected: dict[str, bool] = {}

    # -- protection -------------------------------------------------------
    def protected(self, user_id: str) -> bool:
        """Asked for every membership of every managed team (the brake's counts):
        answered once per user."""
        known = self._protected.get(user_id)
        if known is None:
            known = self._protected[user_id] = self._is_protected(user_id)
        return known

    def _is_protected(self, user_id: str) -> bool:
        if user_id in self.identities.held:
            return True  # might be a Keycloak user with an identity collision: never guessed
        if user_id in (DEFAULT_USER_ID, self.actual.service_user_id):
            return True  # syncd's own identity, auto-added to every team it creates
        if user_id in self.policy.ignore_users:
            return True
        user = self.actual.users.get(user_id)
        if user is None:
            return False
        if user.role in PROXY_ADMIN_ROLES:
            return True
        return bool(user.email and user.email in self.policy.ignore_users)

    def effective_role(self, role: Role) -> Role:
        return role if self.policy.enterprise_license else "user"

    # -- teams ------------------------------------------------------------
    def plan_teams(self) -> None:
        demoted = 0
        for team_id in sorted(self.desired.teams):
            want = self.desired.teams[team_id]
            have = self.actual.teams.get(team_id)
            if have is not None and not have.managed and not self.policy.adopt_existing:
                self.skipped.append(
                    Skipped(team_id, "a team with this id exists without syncd's marker "
                            "(set teams.adopt_existing to take it over)")
                )
                continue
            self.name_alias_clash(want)
            demoted += sum(
                1 for r in want.members.values() if r == "admin" and self.effective_role(r) != r
            )
            metadata_extra = {MANAGED: True, GROUP_PATH: want.path}
            if have is None:
                self.ops.append(CreateTeam(team_id, want.alias, want.settings, metadata_extra))
                self.plan_members(want, {})
                continue
            self.plan_team_update(want, have)
            self.plan_members(want, have.members)
        if demoted:
            self.warnings.append(
                f"{demoted} team admin membership(s) are synced as role 'user': LiteLLM "
                "refuses team admins without an enterprise licence "
                "(set litellm.enterprise_license: true if you have one)"
            )
        for team_id in sorted(self.managed):
            if team_id not in self.desired.teams:
                self.plan_removed_team(self.actual.teams[team_id])

    @functools.cached_property
    def unmanaged_by_alias(self) -> dict[str, list[Team]]:
        """Teams that are not syncd's, by folded alias (in id order): looked up once
        per desired team instead of scanning every team for each."""
        out: dict[str, list[Team]] = defaultdict(list)
        for other in sorted(self.actual.teams.values(), key=lambda t: t.team_id):
            if not other.managed and other.alias is not None:
                out[other.alias.strip().casefold()].append(other)
        return out

    def name_alias_clash(self, want: DesiredTeam) -> None:
        """One warning per team of someone else's with syncd's alias: LiteLLM accepts
        duplicate aliases, and the admin UI then shows two teams of one name. The
        other team is never renamed or touched."""
        for other in self.unmanaged_by_alias.get(want.alias.strip().casefold(), ()):
            if other.team_id == want.team_id:
                continue
            self.warnings.append(
                f"team {want.alias} ({want.path}, id {want.team_id}): LiteLLM team "
                f"{other.team_id} has the same alias {other.alias!r} and is not syncd's, so "
                "LiteLLM shows two teams of that name. syncd leaves that team alone: rename "
                "it in LiteLLM, or rename the group (or set teams.alias_from: path); "
                "teams.adopt_existing takes over only a team whose id is the group id"
            )

    def plan_team_update(self, want: DesiredTeam, have: Team) -> None:
        changes: list[tuple[str, Any, Any]] = []
        if have.alias != want.alias:
            changes.append(("team_alias", have.alias, want.alias))
        changes.extend(want.settings.drift_from(have.settings))
        metadata = dict(have.metadata)
        metadata.update({MANAGED: True, GROUP_PATH: want.path})
        archived = metadata.pop(ARCHIVED_AT, None) is not None
        if archived and have.blocked:
            # The group is back: lift syncd's own archival (it also rewrites metadata).
            self.ops.append(UnblockTeam(have.team_id, metadata))
        elif metadata != dict(have.metadata):
            changes.append(("metadata", _syncd_part(have.metadata), _syncd_part(metadata)))
        if changes:
            self.ops.append(UpdateTeam(have.team_id, tuple(changes), metadata))

    def plan_members(self, want: DesiredTeam, have: Mapping[str, Role]) -> None:
        for user_id in sorted(want.members):
            role = self.effective_role(want.members[user_id])
            if user_id not in have:
                email = self.desired.users[user_id].email if user_id in self.desired.users else None
                # A new admin joins as user, then is promoted: access never depends on
                # a role the proxy may refuse (no licence), and the applier never has
                # to improvise another role. The applier runs adds before role changes.
                self.ops.append(AddMember(want.team_id, user_id, "user", email))
                if role == "admin":
                    self.ops.append(ChangeMemberRole(want.team_id, user_id, "user", "admin"))
            elif have[user_id] != role:
                self.ops.append(ChangeMemberRole(want.team_id, user_id, have[user_id], role))
        for user_id in sorted(have):
            if user_id in want.members or self.protected(user_id):
                continue
            user = self.actual.users.get(user_id)
            evidence = UserOutside(user_id, self.keycloak_id(user_id), frozenset({want.team_id}))
            if user_id in self.desired.users:
                # Still in other groups: leaves this team only. Irreversible,
                # because LiteLLM deletes the member's keys of this team.
                self.ops.append(RemoveMember(
                    want.team_id, user_id, "left_group", "left the group", evidence
                ))
                self.revoke_team_keys(want.team_id, user_id, evidence)
            elif user is None or not user.managed:
                # Not syncd's user: taken out of this team, nothing else touched.
                self.ops.append(RemoveMember(
                    want.team_id, user_id, "not_in_group",
                    "not in the group (user not managed by syncd)", evidence,
                ))
            # A departed user of syncd's keeps the membership until the grace
            # period is over (plan_departed_user).

    def revoke_team_keys(self, team_id: str, user_id: str, evidence: UserOutside) -> None:
        """Delete the keys bound to a team of a member who is removed from it.

        LiteLLM 1.110.2 deletes these inside member_delete; older versions keep
        them. Keys of users who were never members (a bot's key on an adopted
        team) are not touched.
        """
        for key in self.keys_by_team.get(team_id, []):
            if key.user_id != user_id:
                continue
            self.revoked.add(key.token)
            self.ops.append(DeleteKey(
                key.token, user_id, team_id, key.label, "left_group", "left the team", evidence
            ))

    def in_scope(self, op: Op, scope: Scope) -> bool:
        """Is `op` about a team of `scope`, or a LiteLLM user behind one of its
        Keycloak users?"""
        if op.team_id is not None and op.team_id in scope.teams:
            return True
        if isinstance(op, ReleaseEmail) and self.keycloak_id(op.to_user_id) in scope.users:
            return True  # the new holder's event brings their address along
        return op.user_id is not None and self.keycloak_id(op.user_id) in scope.users

    def keycloak_id(self, user_id: str) -> str:
        """The Keycloak user behind a LiteLLM user, for re-reading it."""
        if user_id in self.identities.keycloak_ids:
            return self.identities.keycloak_ids[user_id]
        user = self.actual.users.get(user_id)
        return (owner(user) if user is not None else None) or user_id

    def plan_removed_team(self, team: Team) -> None:
        """Archive: block the team, keep its members and keys (a returning group
        gets them back); delete only after the grace period under ``delete``."""
        reason = "group deleted in Keycloak or no longer selected"
        evidence = GroupGone(team.team_id)
        archived_at = team.metadata.get(ARCHIVED_AT)
        if self.policy.removed_team_policy == "delete" and _grace_over(
            archived_at, self.policy.now, self.policy.removed_team_grace
        ):
            self.ops.append(
                DeleteTeam(
                    team.team_id, "group_gone", f"{reason}; archived since {archived_at}", evidence
                )
            )
            return
        if not team.blocked or archived_at is None:
            metadata = dict(team.metadata)
            metadata.setdefault(ARCHIVED_AT, self.now)
            self.ops.append(BlockTeam(team.team_id, "group_gone", reason, metadata, evidence))

    # -- users ------------------------------------------------------------
    def plan_users(self) -> None:
        # Members of every selected group count as present, including groups
        # skipped for a conflict: a config problem must not read as departures.
        wanted = self.desired.users
        for user_id in sorted(wanted):
            if user_id not in self.actual.users:
                u = self.desired.users[user_id]
                meta = self.identities.bookkeeping(user_id)
                self.ops.append(CreateUser(user_id, u.email, u.username, meta))
                self.unblock_keys(user_id)
        owned = self.owned_teams()
        for user_id in sorted(self.actual.users):
            user = self.actual.users[user_id]
            if self.protected(user_id):
                continue
            if user_id in wanted:
                self.plan_active_user(user)
            elif user.managed:
                # Only syncd's own users are cut off globally; others in a
                # managed team are only taken out of it (plan_members).
                self.plan_departed_user(user, owned)
        self.plan_releases()

    def plan_releases(self) -> None:
        """Reused addresses: move each from the departed user syncd owns to the
        Keycloak user who has it now (syncd.identity). That user was created or
        kept without it above, so their access never waits for this step."""
        deleted = {op.user_id for op in self.ops if isinstance(op, DeleteUser)}
        for r in self.identities.releases:
            user = self.actual.users[r.from_user]
            if r.from_user in deleted or self.protected(r.from_user):
                continue  # a deleted user frees its address; the next run gives it
            metadata = dict(user.metadata)
            metadata[MANAGED] = True
            metadata[SCIM_ACTIVE] = False  # as its BlockUser writes it: it stays cut off
            metadata.setdefault(BLOCKED_AT, self.now)
            metadata[RELEASED_EMAIL] = r.email
            metadata[RELEASED_AT] = self.now
            evidence = UserOutside(r.from_user, r.from_keycloak, email=r.email)
            self.ops.append(ReleaseEmail(
                r.from_user, r.email, r.to_user, r.to_email, metadata, evidence
            ))

    def plan_active_user(self, user: User) -> None:
        metadata = dict(user.metadata)
        metadata.update(self.identities.bookkeeping(user.user_id))
        was_blocked = metadata.pop(BLOCKED_AT, None) is not None
        if metadata.get(SCIM_ACTIVE) is False:
            metadata[SCIM_ACTIVE] = True
            was_blocked = True
        how = self.identities.links.get(user.user_id)
        changes = self.identities.profile.get(user.user_id)
        if changes:
            self.ops.append(UpdateUserProfile(user.user_id, changes))
        if how is not None:
            # One metadata write per user and run (LiteLLM replaces the dict).
            username = self.desired.users[user.user_id].username
            self.ops.append(LinkUser(user.user_id, username, how, metadata))
        elif was_blocked:
            self.ops.append(UnblockUser(user.user_id, metadata))
        elif metadata != dict(user.metadata):
            self.ops.append(UpdateUserMetadata(user.user_id, metadata))
        self.unblock_keys(user.user_id)

    def unblock_keys(self, user_id: str) -> None:
        """Give back the keys syncd blocked; those blocked by hand stay blocked."""
        for key in self.keys_by_user.get(user_id, []):
            if key.blocked_by_syncd and key.token not in self.revoked:
                key_meta = {k: v for k, v in key.metadata.items() if k not in _KEY_MARKERS}
                self.ops.append(UnblockKey(key.token, user_id, key.label, key.blocked, key_meta))

    def plan_departed_user(self, user: User, owned: set[str]) -> None:
        """Cut access reversibly; delete only after the grace period under ``delete``."""
        uid = user.user_id
        evidence = UserOutside(uid, self.keycloak_id(uid))
        keys = [k for k in self.keys_by_user.get(uid, []) if k.token not in self.revoked]
        blocked_at = user.metadata.get(BLOCKED_AT)
        if self.policy.departure_policy == "delete" and _grace_over(
            blocked_at, self.policy.now, self.policy.departure_grace
        ):
            reason = f"departed; blocked since {blocked_at}, grace period over"
            if self.policy.delete_users:
                self.ops.append(DeleteUser(uid, "departed_grace_over", reason, evidence))
                return
            self.block_user(user, "departed_grace_over", reason, evidence)
            for team_id in sorted(owned):
                if uid in self.actual.teams[team_id].members:
                    self.ops.append(
                        RemoveMember(team_id, uid, "departed_grace_over", reason, evidence)
                    )
            for key in keys:
                self.ops.append(DeleteKey(
                    key.token, uid, key.team_id, key.label, "departed_grace_over", reason, evidence
                ))
            return
        reason = "departed: disabled, deleted, or in no selected group"
        self.block_user(user, "departed", reason, evidence)
        for key in keys:
            if key.blocked:
                continue  # blocked by syncd already, or by an administrator: leave as is
            key_meta = dict(key.metadata)
            key_meta[KEY_BLOCKED] = True
            key_meta[BLOCKED_AT] = self.now
            self.ops.append(
                BlockKey(
                    key.token, uid, key.team_id, key.label, "departed", reason, key_meta,
                    evidence,
                )
            )

    def owned_teams(self) -> set[str]:
        """Teams this plan manages: marked ones, and existing ones it adopts now."""
        skipped = {s.team_id for s in self.skipped}
        adopted = {t for t in self.desired.teams if t in self.actual.teams and t not in skipped}
        return set(self.managed) | adopted

    def block_user(self, user: User, cause: Cause, reason: str, evidence: UserOutside) -> None:
        """The kill switch, unless it is already thrown by syncd."""
        if user.kill_switch_on and user.blocked_by_syncd:
            return
        metadata = dict(user.metadata)
        metadata[MANAGED] = True
        metadata[SCIM_ACTIVE] = False
        metadata.setdefault(BLOCKED_AT, self.now)
        self.ops.append(BlockUser(user.user_id, cause, reason, metadata, evidence))

    def managed_memberships(self) -> int:
        return sum(
            1
            for t in self.managed.values()
            for uid in t.members
            if not self.protected(uid)
        )

    def managed_subjects(self) -> int:
        """People and teams the brake's fractions are taken of."""
        people = {uid for t in self.managed.values() for uid in t.members}
        people |= {uid for uid, u in self.actual.users.items() if u.managed}
        return len(self.managed) + sum(1 for uid in people if not self.protected(uid))


_KEY_MARKERS = frozenset({KEY_BLOCKED, BLOCKED_AT})


def _untouchable(actual: Actual, policy: Policy) -> frozenset[str]:
    """LiteLLM users no identity rule may take over or take an address from:
    syncd's own identity, proxy admins, the ignore list (as `protected`)."""
    out = {DEFAULT_USER_ID, *policy.ignore_users}
    if actual.service_user_id:
        out.add(actual.service_user_id)
    for uid, user in actual.users.items():
        if user.role in PROXY_ADMIN_ROLES or (user.email and user.email in policy.ignore_users):
            out.add(uid)
    return frozenset(out)


def _syncd_part(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata keys syncd owns, for showing a change without other keys' values."""
    return {k: v for k, v in metadata.items() if k.startswith("syncd_")}


def make_plan(
    desired: Desired, actual: Actual, policy: Policy, scope: Scope | None = None
) -> Plan:
    """Compute every change that makes LiteLLM match Keycloak, then apply the brake.

    With a `scope` (the event fast path) only the operations about its teams
    and users are kept, and kept *before* the brake counts them: the plan is
    the full plan's part for those subjects, and never escapes the brake.
    """
    planner = _Planner(desired, actual, policy)
    planner.plan_teams()
    planner.plan_users()
    ops = sorted(planner.ops, key=lambda op: op.sort_key())
    if scope is not None:
        ops = [op for op in ops if planner.in_scope(op, scope)]
    memberships = planner.managed_memberships()
    held, reason = brake(ops, memberships, planner.managed_subjects(), policy)
    held_ids = {id(op) for op in held}
    return Plan(
        tuple(op for op in ops if id(op) not in held_ids),
        held,
        tuple(planner.skipped),
        tuple(planner.warnings),
        memberships,
        reason,
        unresolved_identities=planner.identities.left_out,
        withheld_emails=planner.identities.withheld,
    )


def _subjects(ops: Sequence[Op], irreversible: bool) -> set[tuple[str, str]]:
    return {op.subject() for op in ops if op.DESTRUCTIVE and irreversible == op.IRREVERSIBLE}


def brake(
    ops: Sequence[Op], memberships: int, subjects: int, policy: Policy
) -> tuple[tuple[Op, ...], str | None]:
    """Which destructive operations to hold back, and why.

    Counted are people and teams affected, not API calls: one leaver is one,
    however many keys they hold. Reversible cuts (blocks) and irreversible
    steps (deletions, removals) have separate limits, the irreversible one
    stricter. Over the irreversible limit only the irreversible part waits;
    over the blocking limit every destructive operation waits. Fractions apply
    only from `fraction_from_memberships` managed memberships on, so a small
    organisation can always cut off a handful of leavers. "At" a limit is
    allowed, "over" is not; ``--force`` lifts the brake for one run.
    """
    if policy.brake_released:
        return (), None
    use_fraction = memberships >= policy.fraction_from_memberships

    def over(count: int, limit: int, fraction: float, key: str) -> str | None:
        if count > limit:
            return f"{count} exceed safety.max_{key}={limit}"
        if use_fraction and count > fraction * subjects:
            return (
                f"{count} exceed safety.max_{key}_fraction={fraction:g} of {subjects} managed "
                "users and teams"
            )
        return None

    cut = _subjects(ops, irreversible=False)
    deleted = _subjects(ops, irreversible=True)
    why_cut = over(len(cut), policy.max_blocked, policy.max_blocked_fraction, "blocked")
    if why_cut:
        why = f"users and teams to cut off: {why_cut}"
        return tuple(op for op in ops if op.DESTRUCTIVE), why
    why_deleted = over(len(deleted), policy.max_deleted, policy.max_deleted_fraction, "deleted")
    if why_deleted:
        why = f"users and teams with irreversible steps: {why_deleted}"
        return tuple(op for op in ops if op.IRREVERSIBLE), why
    return (), None
