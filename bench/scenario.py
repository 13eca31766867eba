"""The benchmark realm, generated from a seed, and the changes the scenarios make to it.

Everything here is pure and deterministic (one ``random.Random(seed)``): the
same size and seed always give the same users, groups, memberships, keys and
changes, so the imported Keycloak database can be cached and figures from
different runs describe the same work.

Shape of the full size (``SIZES["full"]``):

* 10,000 users ``u00000``..``u09999``, all enabled, every one in at least one
  managed group;
* 1,000 managed groups, two to three levels deep: 10 divisions ``/div-NN``
  (level 1), 100 departments ``/div-NN/dept-MM`` (level 2; some have no
  teams, so those branches are two levels deep) and 890 teams
  ``/div-NN/dept-MM/team-KK`` (level 3); selected with ``path_prefixes``;
* skewed sizes: the four groups first in tree order (``/div-00`` and its
  first three departments) have 1,100 to 3,258 direct members, most teams
  have 5-20, a tail has 20-500; exactly 30,000 direct memberships in managed
  groups;
* 20 unmanaged top-level groups ``/ext-NN`` (not selected), with members,
  so selection is exercised;
* group attributes that set team settings (models on divisions, budgets on
  some departments, TPM limits on some teams);
* API keys (seeded into LiteLLM after provisioning, as people would create
  them): every 10th user has one; half are personal, half are bound to one of
  the owner's teams.

The incremental scenario (``Scenario.incremental_changes``) makes 50
membership changes (25 additions, 25 removals of users who stay in other
groups) and 5 departures (3 users disabled, 2 deleted), chosen so that keys
are involved: some removed users lose a team-bound key, and departed users own
personal and team keys.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from devtools.realm import User, build_realm

GENERATOR_VERSION = 1  # bump when the generated realm changes (invalidates cached imports)
REALM = "bench"
CLIENT_ID = "syncd"
CLIENT_SECRET = "bench-secret"
EMAIL_DOMAIN = "bench.example"
MEMBER_ADD_BATCH = 100  # syncd.apply.BATCH: members per member_add request
KEY_DELETE_BATCH = 100  # syncd.apply.BATCH: keys per key/delete request


@dataclass(frozen=True)
class Size:
    name: str
    users: int
    divisions: int
    departments: int  # level-2 groups, spread over the divisions
    managed_groups: int  # divisions + departments + teams
    big_groups: tuple[int, ...]  # nominal member counts of the largest groups (divisions)
    memberships: int  # exact number of direct memberships in managed groups
    unmanaged_groups: int
    key_every: int  # every n-th user owns one key
    membership_changes: int  # incremental scenario: half additions, half removals
    departures: int  # incremental scenario: ~60 % disabled, the rest deleted
    kc_page_size: int = 100  # syncd keycloak.page_size used by the bench

    @property
    def teams(self) -> int:
        return self.managed_groups - self.divisions - self.departments


SIZES: dict[str, Size] = {
    "full": Size(
        "full", users=10_000, divisions=10, departments=100, managed_groups=1_000,
        big_groups=(2_600, 1_800, 1_300, 1_100), memberships=30_000, unmanaged_groups=20,
        key_every=10, membership_changes=50, departures=5,
    ),
    # Issue 20's large size: ten times the full one, same shape.
    "large": Size(
        "large", users=100_000, divisions=100, departments=1_000, managed_groups=10_000,
        big_groups=(26_000, 18_000, 13_000, 11_000), memberships=300_000,
        unmanaged_groups=200, key_every=10, membership_changes=50, departures=5,
    ),
    # CI-sized: same shape, one group larger than a page of 100 members.
    "small": Size(
        "small", users=300, divisions=2, departments=6, managed_groups=30,
        big_groups=(150,), memberships=900, unmanaged_groups=3,
        key_every=6, membership_changes=10, departures=3,
    ),
}


@dataclass
class Group:
    path: str
    attributes: dict[str, list[str]]
    managed: bool
    members: set[int] = field(default_factory=set)  # user indices (direct members)

    @property
    def parent(self) -> str | None:
        head, _, _ = self.path.rpartition("/")
        return head or None


@dataclass(frozen=True)
class KeySpec:
    user: int
    team: str | None  # group path the key is bound to, None for a personal key
    alias: str


@dataclass(frozen=True)
class Changes:
    """Keycloak changes between two syncs, by user index and group path."""

    additions: tuple[tuple[int, str], ...] = ()
    removals: tuple[tuple[int, str], ...] = ()
    disabled: tuple[int, ...] = ()
    deleted: tuple[int, ...] = ()

    @property
    def membership_changes(self) -> int:
        return len(self.additions) + len(self.removals)

    @property
    def departures(self) -> int:
        return len(self.disabled) + len(self.deleted)

    def describe(self) -> str:
        return (
            f"{len(self.additions)} additions, {len(self.removals)} removals, "
            f"{len(self.disabled)} users disabled, {len(self.deleted)} users deleted"
        )


@dataclass
class KeycloakModel:
    """What Keycloak holds, as far as syncd's reads and plans are concerned."""

    groups: dict[str, Group]  # by path, parents before children
    enabled: set[int]  # enabled users
    deleted: set[int] = field(default_factory=set)

    def copy(self) -> KeycloakModel:
        return KeycloakModel(
            groups={
                p: Group(g.path, g.attributes, g.managed, set(g.members))
                for p, g in self.groups.items()
            },
            enabled=set(self.enabled),
            deleted=set(self.deleted),
        )

    def apply(self, changes: Changes) -> KeycloakModel:
        out = self.copy()
        for user, path in changes.additions:
            out.groups[path].members.add(user)
        for user, path in changes.removals:
            out.groups[path].members.discard(user)
        out.enabled -= set(changes.disabled)
        for user in changes.deleted:
            out.enabled.discard(user)
            out.deleted.add(user)
            for group in out.groups.values():
                group.members.discard(user)
        return out

    @property
    def managed(self) -> list[Group]:
        return [g for g in self.groups.values() if g.managed]

    def desired_members(self) -> dict[str, set[int]]:
        """Team (group path) -> users syncd wants in it (enabled direct members)."""
        return {g.path: g.members & self.enabled for g in self.managed}

    def desired_users(self) -> set[int]:
        return set().union(*self.desired_members().values())

    def children(self) -> Counter[str | None]:
        """Number of direct subgroups per parent path (None: top level)."""
        return Counter(g.parent for g in self.groups.values())

    def memberships(self) -> int:
        return sum(len(g.members) for g in self.managed)


@dataclass
class Scenario:
    size: Size
    seed: int
    model: KeycloakModel
    keys: list[KeySpec]

    @property
    def users(self) -> int:
        return self.size.users

    @staticmethod
    def username(index: int) -> str:
        return f"u{index:05d}"

    @classmethod
    def email(cls, index: int) -> str:
        return f"{cls.username(index)}@{EMAIL_DOMAIN}"

    # -- Keycloak --------------------------------------------------------------
    def realm(self) -> dict[str, Any]:
        """The RealmRepresentation to import (one POST, or partialImport in chunks)."""
        of_user: dict[int, list[str]] = {i: [] for i in range(self.size.users)}
        groups: dict[str, dict[str, list[str]]] = {}
        for group in self.model.groups.values():
            groups[group.path] = group.attributes
            for user in sorted(group.members):
                of_user[user].append(group.path)
        users = [
            User(self.username(i), self.email(i), first_name="Bench", last_name=f"User{i}",
                 groups=of_user[i])
            for i in range(self.size.users)
        ]
        realm = build_realm(
            REALM, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, groups=groups, users=users,
            display_name=f"syncd bench ({self.size.name}, seed {self.seed})",
        )
        # Token requests become CLIENT_LOGIN events, so the bench can count them.
        realm["eventsEnabled"] = True
        realm["enabledEventTypes"] = ["CLIENT_LOGIN"]
        realm["accessTokenLifespan"] = 600
        return realm

    def selection(self) -> list[str]:
        return sorted(g.path for g in self.model.groups.values() if g.managed and not g.parent)

    # -- the incremental scenario ----------------------------------------------
    def incremental_changes(
        self, model: KeycloakModel | None = None, *, salt: int = 1,
        membership_changes: int | None = None, departures: int | None = None,
    ) -> Changes:
        """Additions, removals (users who stay in another group), disabled and deleted users.

        Deterministic for (seed, salt). Departed users and some removed users own
        keys, so key revocation and blocking are part of the work.
        """
        model = model or self.model
        rng = random.Random(self.seed * 7919 + salt)
        n_changes = self.size.membership_changes if membership_changes is None \
            else membership_changes
        n_departures = self.size.departures if departures is None else departures
        active = model.enabled - model.deleted
        groups_of: dict[int, list[str]] = {}
        for group in model.managed:
            for user in group.members & active:
                groups_of.setdefault(user, []).append(group.path)
        personal = [k for k in self.keys if k.team is None and k.user in groups_of]
        team_keys = [
            k for k in self.keys if k.team is not None and k.team in groups_of.get(k.user, [])
        ]
        used: set[int] = set()

        def pick(pool: list[KeySpec], n: int, cond: Any = None) -> list[KeySpec]:
            pool = [k for k in pool if k.user not in used and (cond is None or cond(k))]
            chosen = rng.sample(pool, min(n, len(pool)))
            used.update(k.user for k in chosen)
            return chosen

        leavers = pick(personal, math.ceil(n_departures / 2))
        leavers += pick(team_keys, n_departures - len(leavers))
        leaving = [k.user for k in leavers]
        n_disabled = math.ceil(n_departures * 0.6)
        disabled, deleted = tuple(leaving[:n_disabled]), tuple(leaving[n_disabled:])

        n_removals = n_changes // 2
        removals: list[tuple[int, str]] = []
        # A few removed users lose a key bound to the team they leave.
        for key in pick(team_keys, max(1, n_removals // 8), lambda k: len(groups_of[k.user]) > 1):
            assert key.team is not None
            removals.append((key.user, key.team))
        candidates = sorted(u for u, gs in groups_of.items() if len(gs) > 1 and u not in used)
        for user in rng.sample(candidates, n_removals - len(removals)):
            used.add(user)
            removals.append((user, rng.choice(sorted(groups_of[user]))))

        additions: list[tuple[int, str]] = []
        managed_paths = sorted(g.path for g in model.managed)
        others = sorted(u for u in groups_of if u not in used)
        for user in rng.sample(others, n_changes - n_removals):
            used.add(user)
            choices = [p for p in managed_paths if p not in groups_of[user]]
            additions.append((user, rng.choice(choices)))
        return Changes(tuple(additions), tuple(removals), disabled, deleted)


# --- generation ------------------------------------------------------------------


def _small_group_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.80:
        return rng.randint(5, 20)
    if roll < 0.96:
        return rng.randint(21, 50)
    if roll < 0.995:
        return rng.randint(51, 200)
    return rng.randint(201, 500)


def _split(total: int, parts: int, rng: random.Random, *, zero_share: float = 0.0) -> list[int]:
    """``total`` spread over ``parts`` buckets unevenly; about ``zero_share`` of them empty."""
    weights = [0.0 if rng.random() < zero_share else rng.uniform(0.3, 1.7) for _ in range(parts)]
    if not any(weights):
        weights[0] = 1.0
    scale = total / sum(weights)
    counts = [int(w * scale) for w in weights]
    live = [i for i, w in enumerate(weights) if w]
    for i in range(total - sum(counts)):
        counts[live[i % len(live)]] += 1
    return counts


def generate(size: Size | str, seed: int = 7) -> Scenario:
    """The scenario for a size and seed (deterministic)."""
    size = SIZES[size] if isinstance(size, str) else size
    rng = random.Random(seed)
    groups: dict[str, Group] = {}
    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b"]

    # The tree: divisions > departments > teams; some departments without teams.
    per_division = _split(size.departments, size.divisions, rng)
    departments: list[str] = []
    for d in range(size.divisions):
        path = f"/div-{d:02d}"
        groups[path] = Group(path, {"litellm.models": [",".join(rng.sample(models, 2))]}, True)
        for m in range(per_division[d]):
            dept = f"{path}/dept-{m:02d}"
            attrs = {"litellm.max_budget": [str(rng.choice((100, 250, 1000)))]} \
                if rng.random() < 0.3 else {}
            groups[dept] = Group(dept, attrs, True)
            departments.append(dept)
    per_department = _split(size.teams, len(departments), rng, zero_share=0.15)
    for dept, count in zip(departments, per_department, strict=True):
        for k in range(count):
            team = f"{dept}/team-{k:02d}"
            attrs = {"litellm.tpm_limit": [str(rng.choice((10_000, 50_000)))]} \
                if rng.random() < 0.1 else {}
            groups[team] = Group(team, attrs, True)
    for e in range(size.unmanaged_groups):
        path = f"/ext-{e:02d}"
        groups[path] = Group(path, {}, False)
    managed = [g for g in groups.values() if g.managed]
    assert len(managed) == size.managed_groups, (len(managed), size.managed_groups)

    # Sizes: the first groups in tree order are the big ones, the rest drawn from a skewed mix.
    users = range(size.users)
    big = managed[: len(size.big_groups)]
    rest = managed[len(size.big_groups):]
    for group, n in zip(big, size.big_groups, strict=True):
        group.members = set(rng.sample(users, n))
    for group in rest:
        group.members = set(rng.sample(users, min(_small_group_size(rng), size.users)))
    for group in groups.values():
        if not group.managed:
            group.members = set(rng.sample(users, rng.randint(10, 60)))
    # Everyone is in at least one managed group.
    covered = set().union(*(g.members for g in managed))
    for user in users:
        if user not in covered:
            rng.choice(rest).members.add(user)
    # Hit the exact membership total: grow or shrink the big groups (then the others).
    delta = size.memberships - sum(len(g.members) for g in managed)
    for group in [*big, *rest]:
        if delta > 0:
            outside = sorted(set(users) - group.members)
            take = min(delta, len(outside), max(0, size.users * 3 // 4 - len(group.members)))
            group.members.update(rng.sample(outside, take))
            delta -= take
        elif delta < 0:
            counts = Counter(u for g in managed for u in g.members)
            removable = sorted(u for u in group.members if counts[u] > 1)
            take = min(-delta, len(removable), max(0, len(group.members) - 5))
            group.members.difference_update(rng.sample(removable, take))
            delta += take
    model = KeycloakModel(groups=groups, enabled=set(users))
    assert model.memberships() == size.memberships

    # Keys: every n-th user; alternately personal and bound to one of their teams.
    keys: list[KeySpec] = []
    team_of: dict[int, str] = {}
    for group in managed:  # parents first: prefer the deepest (last) group path
        for user in group.members:
            team_of[user] = group.path
    for n, user in enumerate(range(0, size.users, size.key_every)):
        team = team_of[user] if n % 2 else None
        keys.append(KeySpec(user, team, f"bench-key-{user:05d}"))
    return Scenario(size, seed, model, keys)


# --- what syncd must write -----------------------------------------------------------


def expected_writes(
    before: KeycloakModel,
    after: KeycloakModel,
    keys: Iterable[KeySpec],
    *,
    litellm_empty: bool = False,
) -> Counter[str]:
    """LiteLLM write requests a correct syncd makes to go from `before` to `after`.

    Computed from the bench's own model, not from syncd's plan: per team,
    one ``/team/member_add`` per 100 added members; one ``/team/member_delete``
    per membership removed from a user who stays in other groups (the API takes
    one user per call; a departed user keeps theirs); one ``/user/update`` per
    departed user (the kill switch); for each of a departed user's unblocked
    keys, ``/key/update`` (syncd's marker) then ``/key/block``; keys bound to a
    team their owner left are deleted, up to 100 per ``/key/delete``. With
    `litellm_empty`, everything is created: ``/user/new`` per user,
    ``/team/new`` per team, then the adds.
    """
    writes: Counter[str] = Counter()
    want_after = after.desired_members()
    want_before = {p: set() for p in want_after} if litellm_empty else before.desired_members()
    users_before = set() if litellm_empty else before.desired_users()
    users_after = after.desired_users()
    if litellm_empty:
        writes["/user/new"] = len(users_after)
        writes["/team/new"] = len(want_after)
    elif users_after - users_before:
        raise ValueError("returning or new users are not modelled")
    if set(want_before) != set(want_after):
        raise ValueError("added or removed teams are not modelled")
    revoked: set[str] = set()
    keys = list(keys) if not litellm_empty else []
    departed = users_before - users_after
    for path, members in want_after.items():
        added = members - want_before[path]
        # A departed user keeps their memberships (cut off by the kill switch);
        # only people who stay in other groups leave a team.
        removed = want_before[path] - members - departed
        if added:
            writes["/team/member_add"] += math.ceil(len(added) / MEMBER_ADD_BATCH)
        writes["/team/member_delete"] += len(removed)
        revoked.update(k.alias for k in keys if k.team == path and k.user in removed)
    for user in departed:
        writes["/user/update"] += 1
        for key in keys:
            if key.user == user and key.alias not in revoked:
                writes["/key/update"] += 1
                writes["/key/block"] += 1
    if revoked:
        writes["/key/delete"] += math.ceil(len(revoked) / KEY_DELETE_BATCH)
    return +writes


def expected_changes(before: KeycloakModel, after: KeycloakModel,
                     keys: Iterable[KeySpec]) -> Counter[str]:
    """The changes (syncd's operations, by kind) a correct syncd makes to go from
    `before` to `after`, however they are batched into requests.

    Events reach the daemon over time, so one burst can be applied by several
    scoped runs: a team's additions then take one ``/team/member_add`` per run
    instead of one in all, while the changes themselves are the same ones a
    single full reconcile would make. This is what "the writes of a full
    reconcile" means for a burst; `expected_writes` counts requests.
    """
    changes: Counter[str] = Counter()
    want_after, want_before = after.desired_members(), before.desired_members()
    users_before, users_after = before.desired_users(), after.desired_users()
    if users_after - users_before:
        raise ValueError("returning or new users are not modelled")
    departed = users_before - users_after
    revoked: set[str] = set()
    for path, members in want_after.items():
        removed = want_before.get(path, set()) - members - departed
        changes["add_member"] += len(members - want_before.get(path, set()))
        changes["remove_member"] += len(removed)
        revoked.update(k.alias for k in keys if k.team == path and k.user in removed)
    changes["delete_key"] += len(revoked)
    for user in departed:
        changes["block_user"] += 1
        changes["block_key"] += sum(1 for k in keys if k.user == user and k.alias not in revoked)
    return +changes


def write_floor(before: KeycloakModel, after: KeycloakModel, keys: Iterable[KeySpec], *,
                litellm_empty: bool = False) -> Counter[str]:
    """The fewest LiteLLM writes the API allows for the same work (see docs/performance.md).

    Differs from `expected_writes` where syncd deliberately spends requests:
    member_add takes a list of any length (syncd sends at most 100 per call),
    and ``/key/update`` accepts ``blocked`` with the metadata in one call
    (syncd writes its marker, then blocks, so a crash in between never leaves a
    blocked key it would not recognise). Revoked team keys are counted: older
    LiteLLM keeps them on member_delete.
    """
    floor = expected_writes(before, after, keys, litellm_empty=litellm_empty)
    want_after = after.desired_members()
    want_before = {p: set() for p in want_after} if litellm_empty else before.desired_members()
    floor["/team/member_add"] = sum(1 for p, m in want_after.items() if m - want_before[p])
    floor["/key/block"] = 0
    return +floor


def keycloak_read_floor(model: KeycloakModel, page: int) -> dict[str, int]:
    """Fewest Keycloak admin reads for syncd's work, at page size `page`.

    * top-level groups: the count is unknown, so ``n // page + 1`` pages (the
      last one short, possibly empty, says "no more");
    * children of each group with subgroups: the listing gives
      ``subGroupCount``, so ``ceil(c / page)`` pages;
    * members of each selected group: no count in the API, ``n // page + 1``;
    * one token (counted separately, not an admin read).
    There is no call that returns members of many groups, nor one that returns
    the whole tree with ids and attributes without a search term.
    """
    children = model.children()
    top = children[None] // page + 1
    subs = sum(math.ceil(n / page) for parent, n in children.items() if parent is not None)
    members = sum(len(g.members - model.deleted) // page + 1 for g in model.managed)
    return {"top": top, "children": subs, "members": members, "total": top + subs + members}


def litellm_read_floor(rows: Mapping[str, int], page: int = 100) -> dict[str, int]:
    """One request per page of each full listing (LiteLLM caps pages at 100 rows and
    reports ``total_pages``, so no empty trailing page is needed)."""
    out = {name: max(1, math.ceil(n / page)) for name, n in rows.items()}
    out["total"] = sum(out.values())
    return out


def summary(scenario: Scenario) -> dict[str, Any]:
    model = scenario.model
    sizes = sorted((len(g.members) for g in model.managed), reverse=True)
    depth = Counter(g.path.count("/") for g in model.managed)
    return {
        "size": scenario.size.name,
        "seed": scenario.seed,
        "users": scenario.size.users,
        "managed_groups": len(model.managed),
        "unmanaged_groups": sum(1 for g in model.groups.values() if not g.managed),
        "groups_by_depth": dict(sorted(depth.items())),
        "memberships": model.memberships(),
        "largest_groups": sizes[:6],
        "groups_5_to_20": sum(1 for s in sizes if 5 <= s <= 20),
        "median_group": sizes[len(sizes) // 2],
        "keys": len(scenario.keys),
        "team_keys": sum(1 for k in scenario.keys if k.team),
    }
