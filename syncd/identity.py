"""Which LiteLLM user is which Keycloak user. Pure: (desired, actual, rule) -> Identities.

A proxy that has been in use for a year is full of users syncd did not make:
SSO logins (whose ``user_id`` is the IdP's username or email), hand-made
users, users of another tool. This module decides, before anything is
planned, which of them belongs to which Keycloak user, and refuses to guess:

- a Keycloak user's LiteLLM ``user_id`` follows ``users.id_from``: the Keycloak
  id (default), the username, or the email (lower-cased, as LiteLLM's SSO
  stores emails);
- a LiteLLM user that syncd already linked carries the Keycloak id
  (``syncd_keycloak_id``; for users whose id *is* the Keycloak id the marker
  alone says it), so it stays linked when the email or username changes;
- an existing LiteLLM user is linked when its id is the Keycloak user's id
  under the rule, or (``users.link_by_email``) when its email matches exactly,
  case-insensitively, and no other Keycloak or LiteLLM user claims that email;
- anything else that would need a guess is an *unresolved identity*: an email
  shared by two Keycloak users, an email held by a LiteLLM user who cannot be
  linked (LiteLLM refuses a second user with the same email), a LiteLLM user
  claimed by two Keycloak users. Such a Keycloak user is left out of this run
  with one warning naming both sides; the LiteLLM users that might be theirs are
  *held*: not blocked, not removed from any team, not changed;
- a changed rule is refused (`ConfigError`): every user syncd made under the
  old rule would otherwise get a second LiteLLM user.

The result maps Keycloak users to LiteLLM ids one to one (never two Keycloak
users onto one LiteLLM user), and `Identities.desired` is the desired state
re-keyed by LiteLLM user id, which is what the planner compares with LiteLLM.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from syncd.errors import ConfigError
from syncd.model import ID_FROM, KEYCLOAK_ID, MANAGED, Actual, Desired, DesiredUser, Role, User

IdFrom = Literal["id", "username", "email"]
DEFAULT_RULE: IdFrom = "id"  # the only rule before users.id_from existed


@dataclass(frozen=True)
class Unresolved:
    """A Keycloak user left out of this run (or a change of theirs not made), and why."""

    keycloak_id: str
    username: str
    message: str  # names both sides by username / user id, never a key


@dataclass(frozen=True)
class Identities:
    desired: Desired  # users and team members keyed by LiteLLM user id
    keycloak_ids: Mapping[str, str]  # LiteLLM user id -> Keycloak user id (resolved users)
    links: Mapping[str, str]  # LiteLLM user id -> "id" | "email": existing users to take over
    profile: Mapping[str, tuple[tuple[str, Any, Any], ...]]  # user_email / user_alias changes
    unresolved: tuple[Unresolved, ...] = ()
    held: frozenset[str] = frozenset()  # LiteLLM users left untouched this run
    rule: IdFrom = DEFAULT_RULE

    def bookkeeping(self, user_id: str) -> dict[str, Any]:
        """The metadata keys syncd keeps on a resolved user (besides the kill switch)."""
        out: dict[str, Any] = {MANAGED: True}
        kc = self.keycloak_ids.get(user_id, user_id)
        if kc != user_id:
            out[KEYCLOAK_ID] = kc
        if self.rule != DEFAULT_RULE:
            out[ID_FROM] = self.rule
        return out

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(u.message for u in self.unresolved)


def rule_id(user: DesiredUser, rule: IdFrom) -> str | None:
    """The LiteLLM user_id a Keycloak user gets under `rule` (None: it has no email)."""
    if rule == "username":
        return user.username
    if rule == "email":
        return user.email.strip().lower() if user.email and user.email.strip() else None
    return user.user_id


def owner(user: User) -> str | None:
    """The Keycloak user a LiteLLM user belongs to, if syncd recorded one."""
    stored = user.metadata.get(KEYCLOAK_ID)
    if isinstance(stored, str) and stored:
        return stored
    return user.user_id if user.managed else None


def stored_rule(user: User) -> str:
    value = user.metadata.get(ID_FROM)
    return value if isinstance(value, str) and value else DEFAULT_RULE


def check_rule(actual: Actual, rule: IdFrom) -> None:
    """Refuse a ``users.id_from`` different from the one syncd's users were made under."""
    other = sorted(
        (u for u in actual.users.values() if u.managed and stored_rule(u) != rule),
        key=lambda u: u.user_id,
    )
    if not other:
        return
    was = sorted({stored_rule(u) for u in other})
    raise ConfigError(
        f"users.id_from is {rule!r} but {len(other)} LiteLLM user(s) syncd manages were "
        f"made under users.id_from {' / '.join(repr(w) for w in was)} (e.g. {other[0].user_id}); "
        "a new rule would give each of them a second LiteLLM user. Set users.id_from back "
        f"to {was[0]!r}; nothing was written"
    )


def _fold(email: str | None) -> str | None:
    return email.strip().casefold() if email and email.strip() else None


def _who(user: User) -> str:
    kc = owner(user)
    if kc is None:
        return f"LiteLLM user {user.user_id} (not managed by syncd)"
    if kc == user.user_id:
        return f"LiteLLM user {user.user_id} (syncd's)"
    return f"LiteLLM user {user.user_id} (syncd's, Keycloak user {kc})"


def resolve(
    desired: Desired, actual: Actual, rule: IdFrom = DEFAULT_RULE, link_by_email: bool = False
) -> Identities:
    """Map every Keycloak user to at most one LiteLLM user, one to one; see the module doc."""
    check_rule(actual, rule)
    kc_users = [desired.users[k] for k in sorted(desired.users)]
    kc_by_email: dict[str, list[DesiredUser]] = defaultdict(list)
    for k in kc_users:
        if (e := _fold(k.email)) is not None:
            kc_by_email[e].append(k)
    ll_by_email: dict[str, list[User]] = defaultdict(list)
    owned: dict[str, list[User]] = defaultdict(list)
    for u in sorted(actual.users.values(), key=lambda u: u.user_id):
        if (e := _fold(u.email)) is not None:
            ll_by_email[e].append(u)
        if (kc := owner(u)) is not None:
            owned[kc].append(u)
    claims: dict[str, list[DesiredUser]] = defaultdict(list)  # LiteLLM id -> by rule
    for k in kc_users:
        if not owned.get(k.user_id) and (cand := rule_id(k, rule)) is not None:
            claims[cand].append(k)

    target: dict[str, str] = {}  # Keycloak id -> LiteLLM id
    links: dict[str, str] = {}
    unresolved: list[Unresolved] = []
    held: set[str] = set()

    def skip(k: DesiredUser, why: str, *hold: User) -> None:
        unresolved.append(Unresolved(k.user_id, k.username, f"Keycloak user {k.username} "
                                     f"({k.user_id}) not synced: {why}"))
        held.update(u.user_id for u in hold if owner(u) in (None, k.user_id))

    def others(k: DesiredUser) -> str:
        return ", ".join(f"Keycloak user {o.username} ({o.user_id})"
                         for o in kc_by_email[_fold(k.email) or ""] if o is not k)

    for k in kc_users:
        email = _fold(k.email)
        mine = owned.get(k.user_id, [])
        if len(mine) > 1:
            skip(k, "several LiteLLM users belong to it ("
                 + ", ".join(u.user_id for u in mine) + "); delete all but one", *mine)
            continue
        if mine:
            target[k.user_id] = mine[0].user_id
            continue
        cand = rule_id(k, rule)
        if cand is None:
            skip(k, "it has no email and users.id_from is 'email'")
            continue
        existing = actual.users.get(cand)
        if existing is not None:
            kc = owner(existing)
            if kc is not None and kc != k.user_id:
                skip(k, f"its LiteLLM id {cand} is taken by {_who(existing)}")
            elif len(claims[cand]) > 1:
                skip(k, f"LiteLLM user {cand} is claimed by {others(k)} too "
                     "(two Keycloak users with one email)", existing)
            else:
                target[k.user_id] = cand
                links[cand] = "id"
            continue
        if email is not None and len(kc_by_email[email]) > 1:
            skip(k, f"its email {k.email} is also the email of {others(k)}; "
                 "LiteLLM needs one email per user", *ll_by_email.get(email, []))
            continue
        holders = ll_by_email.get(email, []) if email is not None else []
        if holders:
            h = holders[0]
            free = (len(holders) == 1 and owner(h) is None and not claims.get(h.user_id))
            if link_by_email and free:
                target[k.user_id] = h.user_id
                links[h.user_id] = "email"
                continue
            if len(holders) > 1:
                why = "several LiteLLM users hold it"
            elif owner(h) is not None:
                why = "that user belongs to another Keycloak user; its keys are not taken over"
            elif claims.get(h.user_id):
                why = "that user's id is another Keycloak user's under users.id_from"
            else:
                why = ("set users.link_by_email: true to link that user, or users.id_from to "
                       "match the proxy's SSO")
            skip(k, f"its email {k.email} is held by "
                 + ", ".join(_who(u) for u in holders) + f" ({why})", *holders)
            continue
        target[k.user_id] = cand

    # Defence in depth: never two Keycloak users on one LiteLLM user.
    by_target: dict[str, list[str]] = defaultdict(list)
    for kc, uid in target.items():
        by_target[uid].append(kc)
    for uid, kcs in by_target.items():
        if len(kcs) > 1:
            for kc in kcs:
                del target[kc]
                k = desired.users[kc]
                skip(k, f"LiteLLM user {uid} would belong to two Keycloak users")
            links.pop(uid, None)
            if uid in actual.users:
                held.add(uid)

    profile: dict[str, tuple[tuple[str, Any, Any], ...]] = {}
    for kc, uid in sorted(target.items()):
        have = actual.users.get(uid)
        k = desired.users[kc]
        if have is None:
            continue
        changes: list[tuple[str, Any, Any]] = []
        # The alias follows renames, and is set when a user is linked; a user syncd
        # already manages whose row has no alias at all is left as it is.
        if have.alias != k.username and (have.alias is not None or uid in links):
            changes.append(("user_alias", have.alias, k.username))
        # A changed email is followed, and set when linking; a row without any email
        # is left (LiteLLM fills a null email itself at SSO login:
        # auth/auth_checks.py::_backfill_null_user_email).
        email = _fold(k.email)
        if k.email and email is not None and have.email != k.email \
                and (have.email is not None or uid in links):
            clash = [u for u in ll_by_email.get(email, []) if u.user_id != uid]
            if len(kc_by_email[email]) > 1:
                unresolved.append(Unresolved(kc, k.username, (
                    f"Keycloak user {k.username} ({kc}): email not changed to {k.email} in "
                    f"LiteLLM user {uid}: it is also the email of {others(k)}")))
            elif clash:
                unresolved.append(Unresolved(kc, k.username, (
                    f"Keycloak user {k.username} ({kc}): email not changed to {k.email} in "
                    f"LiteLLM user {uid}: it is held by "
                    + ", ".join(_who(u) for u in clash))))
            else:
                changes.append(("user_email", have.email, k.email))
        elif email is not None and len(kc_by_email[email]) > 1:
            unresolved.append(Unresolved(kc, k.username, (
                f"Keycloak user {k.username} ({kc}) shares its email {k.email} with "
                f"{others(k)}; LiteLLM user {uid} is left as it is")))
        if changes:
            profile[uid] = tuple(changes)

    users = {
        uid: DesiredUser(uid, desired.users[kc].username, desired.users[kc].email)
        for kc, uid in target.items()
    }
    teams = {}
    for tid, team in desired.teams.items():
        members: dict[str, Role] = {
            target[kc]: role for kc, role in team.members.items() if kc in target
        }
        teams[tid] = replace(team, members=members)
    return Identities(
        desired=replace(desired, users=users, teams=teams),
        keycloak_ids={uid: kc for kc, uid in target.items()},
        links=links,
        profile=profile,
        unresolved=tuple(unresolved),
        held=frozenset(held - set(target.values())),
        rule=rule,
    )

