"""Which LiteLLM user is which Keycloak user, and which of them has which email.
Pure: (desired, actual, rule) -> Identities.

A proxy that has been in use for a year is full of users syncd did not make:
SSO logins (whose ``user_id`` is the IdP's username or email), hand-made
users, users of another tool. This module decides, before anything is
planned, which of them belongs to which Keycloak user, and refuses to guess.
Access comes first, the email second: LiteLLM refuses a second user with a
known email, so an email that cannot be given is *withheld*, never a reason to
leave a person without their teams.

- a Keycloak user's LiteLLM ``user_id`` follows ``users.id_from``: the Keycloak
  id (default), the username, or the email (lower-cased, as LiteLLM's SSO
  stores emails);
- a LiteLLM user that syncd already linked carries the Keycloak id
  (``syncd_keycloak_id``; for users whose id *is* the Keycloak id the marker
  alone says it), so it stays linked when the email or username changes;
- an existing LiteLLM user is linked when its id is the Keycloak user's id
  under the rule, or (``users.link_by_email``) when it is the one LiteLLM user
  holding the Keycloak user's email (case-insensitively), no other Keycloak
  user has that email, nobody else claims it by id, and, under ``verified``
  (the default), Keycloak marks the address verified: a user who may edit their
  own email must not be able to claim another person's LiteLLM user with it;
- the email: a Keycloak user's LiteLLM user gets its Keycloak email unless
  another Keycloak user has the same address (then none of them is given it; one
  that holds it already keeps it: stable, and nobody's address moves to a
  namesake) or another LiteLLM user holds it. An address held by a departed user
  syncd owns (its Keycloak user gone, or no longer in a selected group) is
  *released*: planned as a `Release`, applied only when a fresh read shows that
  Keycloak user deleted, disabled or without the address. An address is never
  taken from an active user, nor from a user syncd does not own. Until then the
  user is created or kept without it, with one warning naming both sides
  (`Unresolved` with ``access``);
- left out (`Unresolved` without ``access``, the run exits 9) is only a
  Keycloak user who cannot have a LiteLLM user at all: no email under
  ``id_from: email``, an id under the rule that belongs to another Keycloak
  user or is claimed by two, several LiteLLM users recorded for it. The LiteLLM
  users that might be theirs are *held*: not blocked, not removed from any
  team, not changed;
- a changed rule is refused (`ConfigError`): every user syncd made under the
  old rule would otherwise get a second LiteLLM user.

The result maps Keycloak users to LiteLLM ids one to one (never two Keycloak
users onto one LiteLLM user), and `Identities.desired` is the desired state
re-keyed by LiteLLM user id, each user with the email syncd gives it, which is
what the planner compares with LiteLLM.
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
# users.link_by_email: "verified" (default), "true" (whatever Keycloak says), "false".
LinkByEmail = Literal["verified", "true", "false"]


@dataclass(frozen=True)
class Unresolved:
    """A Keycloak user whose identity needs a person to look, and why."""

    keycloak_id: str
    username: str
    message: str  # names both sides by username / user id, never a key
    # True: synced with their teams, only the email withheld (the run succeeds);
    # False: left out of this run, without a LiteLLM user (exit 9).
    access: bool = False


@dataclass(frozen=True)
class Release:
    """An address to move from a departed user syncd owns to its new holder."""

    from_user: str  # the departed LiteLLM user holding it
    from_keycloak: str  # its Keycloak user, re-read before the move
    email: str  # as the departed user holds it
    to_user: str  # the LiteLLM user of the Keycloak user who has it now
    to_email: str  # as Keycloak spells it for them


@dataclass(frozen=True)
class Identities:
    desired: Desired  # users (with the email syncd gives them) and members by LiteLLM id
    keycloak_ids: Mapping[str, str]  # LiteLLM user id -> Keycloak user id (resolved users)
    links: Mapping[str, str]  # LiteLLM user id -> "id" | "email": existing users to take over
    profile: Mapping[str, tuple[tuple[str, Any, Any], ...]]  # user_email / user_alias changes
    unresolved: tuple[Unresolved, ...] = ()
    held: frozenset[str] = frozenset()  # LiteLLM users left untouched this run
    rule: IdFrom = DEFAULT_RULE
    releases: tuple[Release, ...] = ()

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

    @property
    def left_out(self) -> int:
        """Keycloak users without a LiteLLM user this run (exit 9)."""
        return sum(not u.access for u in self.unresolved)

    @property
    def withheld(self) -> int:
        """Keycloak users synced without the email Keycloak gives them."""
        return sum(u.access for u in self.unresolved)


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
    """Refuse a ``users.id_from`` different from the one syncd's users were made under.

    Called as soon as LiteLLM's users are read, which cancels the Keycloak read
    still running: a rule that would give everyone a second user is a
    configuration error, found before anything else is looked at."""
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


def fold(email: str | None) -> str | None:
    """An email as compared (LiteLLM's /user/new compares case-insensitively);
    None for none, and for the empty string syncd leaves on a released user."""
    return email.strip().casefold() if email and email.strip() else None


def _who(user: User) -> str:
    kc = owner(user)
    if kc is None:
        return f"LiteLLM user {user.user_id} (not managed by syncd)"
    if kc == user.user_id:
        return f"LiteLLM user {user.user_id} (syncd's)"
    return f"LiteLLM user {user.user_id} (syncd's, Keycloak user {kc})"


def _kc(k: DesiredUser) -> str:
    return f"Keycloak user {k.username} ({k.user_id})"


def resolve(
    desired: Desired,
    actual: Actual,
    rule: IdFrom = DEFAULT_RULE,
    link_by_email: LinkByEmail = "verified",
    protected: frozenset[str] = frozenset(),
) -> Identities:
    """Map every Keycloak user to at most one LiteLLM user, one to one, and decide
    each one's email; see the module doc. `protected`: LiteLLM users syncd never
    changes (proxy admins, the ignore list, its own identity): never linked by
    email, never released. The rule itself was checked against LiteLLM when it
    was read (`check_rule`)."""
    kc_users = [desired.users[k] for k in sorted(desired.users)]
    kc_by_email: dict[str, list[DesiredUser]] = defaultdict(list)
    for k in kc_users:
        if (e := fold(k.email)) is not None:
            kc_by_email[e].append(k)
    ll_by_email: dict[str, list[User]] = defaultdict(list)
    owned: dict[str, list[User]] = defaultdict(list)
    for u in sorted(actual.users.values(), key=lambda u: u.user_id):
        if (e := fold(u.email)) is not None:
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

    def leave_out(k: DesiredUser, why: str, *hold: User) -> None:
        unresolved.append(Unresolved(k.user_id, k.username, f"{_kc(k)} not synced: {why}"))
        held.update(u.user_id for u in hold if owner(u) in (None, k.user_id))

    def namesakes(k: DesiredUser) -> list[DesiredUser]:
        """The other Keycloak users with the same email."""
        return [o for o in kc_by_email.get(fold(k.email) or "", []) if o is not k]

    def by_email(k: DesiredUser) -> User | None:
        """The existing LiteLLM user `k` takes over by email, if the rules allow it."""
        email = fold(k.email)
        holders = ll_by_email.get(email, []) if email is not None else []
        if link_by_email == "false" or len(holders) != 1 or namesakes(k):
            return None
        h = holders[0]
        if owner(h) is not None or claims.get(h.user_id) or h.user_id in protected:
            return None
        if link_by_email == "verified" and not k.email_verified:
            return None
        return h

    for k in kc_users:
        mine = owned.get(k.user_id, [])
        if len(mine) > 1:
            leave_out(k, "several LiteLLM users belong to it ("
                      + ", ".join(u.user_id for u in mine) + "); delete all but one", *mine)
            continue
        if mine:
            target[k.user_id] = mine[0].user_id
            continue
        cand = rule_id(k, rule)
        if cand is None:
            leave_out(k, "it has no email and users.id_from is 'email'")
            continue
        existing = actual.users.get(cand)
        if len(claims[cand]) > 1:
            rivals = ", ".join(_kc(o) for o in claims[cand] if o is not k)
            leave_out(k, f"its LiteLLM id {cand} (users.id_from: {rule}) is also that of "
                      f"{rivals}; one LiteLLM user cannot be two people",
                      *([existing] if existing is not None else []))
            continue
        if existing is not None:
            kc = owner(existing)
            if kc is not None and kc != k.user_id:
                leave_out(k, f"its LiteLLM id {cand} is taken by {_who(existing)}; a departed "
                          "user's id is never given to someone else (delete that user in "
                          "LiteLLM, or choose another users.id_from before the first run)")
            else:
                target[k.user_id] = cand
                links[cand] = "id"
            continue
        if (h := by_email(k)) is not None:
            target[k.user_id] = h.user_id
            links[h.user_id] = "email"
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
                leave_out(desired.users[kc], f"LiteLLM user {uid} would belong to two "
                          "Keycloak users")
            links.pop(uid, None)
            if uid in actual.users:
                held.add(uid)

    resolved = set(target.values())
    active = {uid: desired.users[kc] for kc, uid in target.items()}

    def why_held(k: DesiredUser, holders: list[User]) -> str:
        """Why `k`'s address stays where it is (it is not free, not releasable)."""
        if len(holders) > 1:
            return "several LiteLLM users hold it"
        h = holders[0]
        if h.user_id in active:
            return (f"it belongs to {_kc(active[h.user_id])}, who is active; an address is "
                    "never taken from an active user (change one of them in Keycloak)")
        if h.user_id in protected:
            return "syncd never changes that user (a proxy admin, or on departures.ignore_users)"
        if owner(h) is not None:
            return "that user's Keycloak user is still claimed; it is never taken over"
        if link_by_email == "false":
            return ("users.link_by_email is false; set it to verified to link that user "
                    "(its keys and spend stay)")
        if claims.get(h.user_id):
            return "that user's id is another Keycloak user's under users.id_from"
        if namesakes(k):
            return "two Keycloak users have that email, so it links neither"
        return ("Keycloak does not mark the address verified, so that user is not linked "
                "(an address a user can set themselves could claim another person's "
                "LiteLLM user); once it is verified, delete the new LiteLLM user "
                f"{target[k.user_id]} and the next run links {h.user_id} "
                "(or set users.link_by_email: true)")

    def releasable(h: User) -> bool:
        """A departed user syncd owns: its address may move once a fresh read agrees."""
        kc = owner(h)
        return (kc is not None and kc not in desired.users and h.user_id not in resolved
                and h.user_id not in held and h.user_id not in protected)

    gives: dict[str, str | None] = {}  # LiteLLM id -> the email it is created with
    profile: dict[str, tuple[tuple[str, Any, Any], ...]] = {}
    releases: list[Release] = []
    for kc, uid in sorted(target.items()):
        k = desired.users[kc]
        have = actual.users.get(uid)
        email = fold(k.email)
        now = fold(have.email) if have is not None else None
        others = namesakes(k)
        holders = [u for u in ll_by_email.get(email, []) if u.user_id != uid] \
            if email is not None else []
        give: str | None = None  # the address to set, when it is free
        if email is None:
            pass  # no address in Keycloak: an address in LiteLLM is left as it is
        elif now == email:
            if have is not None and have.email != k.email and not others and not holders:
                give = k.email  # the same address, spelt as Keycloak spells it now
        elif others:
            unresolved.append(Unresolved(kc, k.username, (
                f"{_kc(k)} is synced to LiteLLM user {uid} without its email {k.email}: it is "
                "also the email of " + ", ".join(_kc(o) for o in others)
                + " and LiteLLM holds one email per user; none of them is given it, one "
                "that has it already keeps it"), access=True))
            held.update(u.user_id for u in holders if owner(u) is None)
        elif len(holders) == 1 and releasable(holders[0]):
            h = holders[0]
            releases.append(Release(h.user_id, owner(h) or h.user_id, h.email or "",
                                    uid, k.email or ""))
        elif holders:
            unresolved.append(Unresolved(kc, k.username, (
                f"{_kc(k)} is synced to LiteLLM user {uid} without its email {k.email}: it is "
                "held by " + ", ".join(_who(u) for u in holders)
                + f" ({why_held(k, holders)})"), access=True))
            held.update(u.user_id for u in holders if owner(u) is None)
        else:
            give = k.email
        if have is None:
            gives[uid] = give
            continue
        gives[uid] = give if give is not None else have.email if now is not None else None
        changes: list[tuple[str, Any, Any]] = []
        # The alias follows renames, and is set when a user is linked; a user syncd
        # already manages whose row has no alias at all is left as it is.
        if have.alias != k.username and (have.alias is not None or uid in links):
            changes.append(("user_alias", have.alias, k.username))
        if give is not None and have.email != give:
            changes.append(("user_email", have.email, give))
        if changes:
            profile[uid] = tuple(changes)

    users = {
        uid: replace(desired.users[kc], user_id=uid, email=gives[uid])
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
        held=frozenset(held - resolved),
        rule=rule,
        releases=tuple(releases),
    )
