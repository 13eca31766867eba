"""Scoped runs (the one reconciler, issue 20) against a real Keycloak and the emulator.

The reconciler runs in this process, as the daemon's worker runs it: a full
request first, then scoped requests naming what changed (the admin-event tail
that turns events into those names is tested in tests/service/test_events.py).
Each kind of change reaches LiteLLM through the scoped path at a cost that does
not depend on the size of the organisation (requests counted), and over random
sequences of changes the kept view of LiteLLM always equals a fresh full read,
and a full reconcile afterwards finds nothing left to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.litellm_emulator.admin import EmulatorAdmin
from syncd.config import Settings, load_settings
from syncd.events import Hints
from syncd.metrics import Metrics
from syncd.model import Actual
from syncd.reconciler import Clients, Reconciler, RunReport
from syncd.requests import Full, Scoped
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import answers, members, teams, users

pytestmark = pytest.mark.integration

GROUPS: dict[str, dict[str, str]] = {"/llm/red": {}, "/llm/blue": {}, "/llm/green": {}}
PEOPLE = ["ann", "ben", "cat", "dan"]
USERS = [
    {"username": "ann", "email": "ann@example.com", "groups": ["/llm/red"]},
    {"username": "ben", "email": "ben@example.com", "groups": ["/llm/red", "/llm/blue"]},
    {"username": "cat", "email": "cat@example.com", "groups": ["/llm/blue"]},
    {"username": "dan", "email": "dan@example.com", "groups": []},
    {"username": "eve", "email": "eve@example.com",
     "groups": ["/llm/red", "/llm/blue", "/llm/green", "/llm/pad00", "/llm/pad01"]},
]
# Padding: many more people and teams than any change touches, so a cost that
# grows with the organisation shows in the request counts.
PADDING_GROUPS = {f"/llm/pad{i:02d}": {} for i in range(20)}
PADDING_USERS = [
    {"username": f"p{i:03d}", "email": f"p{i:03d}@example.com", "groups": [f"/llm/pad{i % 20:02d}"]}
    for i in range(120)
]
# Unselected parents with subgroups: reading the whole tree costs a request for
# each of them, so a group change that reads the whole tree shows in the counts.
DEEP_GROUPS = {f"/org{i:02d}/unit": {} for i in range(12)}
MAX_KEYCLOAK, MAX_LITELLM = 5, 10  # issue 20: one user's change


def settings_for(realm: KeycloakRealm, emulator: EmulatorAdmin, tmp: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Settings:
    config: dict[str, Any] = {
        "keycloak": {"url": realm.url, "realm": realm.name, "client_id": realm.client_id},
        "litellm": {"url": emulator.url},
        "selection": {"path_prefixes": ["/llm"], "attribute": None},
        "retries": {"max_attempts": 2, "initial_backoff_seconds": 0.05},
        "safety": {"max_blocked": 100, "max_deleted": 100},
    }
    path = tmp / "syncd.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"SYNCD_KEYCLOAK__CLIENT_SECRET": realm.client_secret,
           "SYNCD_LITELLM__API_KEY": emulator.master_key}
    return load_settings(path, env)


class Session:
    """One long-lived reconciler (the daemon's), and a way to read LiteLLM afresh."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.metrics = Metrics()
        self.clients = self.loop.run_until_complete(self._clients())
        self.reconciler = Reconciler(settings, self.clients, self.metrics, keep_view=True)

    async def _clients(self) -> Clients:
        return Clients(self.settings, self.metrics)

    def full(self) -> RunReport:
        return self.loop.run_until_complete(self.reconciler.run(Full("test")))

    def scoped(self, users: set[str] | None = None, groups: set[str] | None = None) -> RunReport:
        hints = Hints(users=set(users or ()), groups=set(groups or ()), events=1)
        return self.loop.run_until_complete(self.reconciler.run(Scoped(hints)))

    def fresh_read(self) -> Actual:
        """LiteLLM read whole by a second reconciler, as a new process would."""
        async def read() -> Actual:
            clients = Clients(self.settings, Metrics())
            try:
                other = Reconciler(self.settings, clients, Metrics(), keep_view=True)
                report = await other.run(Full("check"), mode="check")
                assert report.failure is None, report.error
                assert report.plan is not None and not report.plan, (
                    f"a full reconcile still finds work: {report.plan.operations}"
                )
                assert other.view is not None
                return other.view
            finally:
                await clients.aclose()
        return self.loop.run_until_complete(read())

    def close(self) -> None:
        self.loop.run_until_complete(self.clients.aclose())
        self.loop.close()


@pytest.fixture
def session(realm: KeycloakRealm, emulator: EmulatorAdmin, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    s = Session(settings_for(realm, emulator, tmp_path, monkeypatch))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def realm(realm_factory: RealmFactory) -> KeycloakRealm:
    return realm_factory(groups={**GROUPS, **PADDING_GROUPS, **DEEP_GROUPS},
                         users=[*USERS, *PADDING_USERS])


def cost(report: RunReport) -> tuple[int, int]:
    stats = report.stats
    assert stats.result == "success", report.error or report.warnings
    assert stats.kind == "scoped"
    return stats.kc_requests, stats.ll_requests


def team_members(emulator: EmulatorAdmin, realm: KeycloakRealm, path: str) -> set[str]:
    return set(members(teams(emulator)[realm.group_id(path)]))


def test_each_kind_of_user_change_goes_through_the_scoped_path_at_a_small_cost(
    session: Session, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    first = session.full()
    assert first.stats.result == "success" and first.stats.applied > 100
    uid = realm.user_ids()
    ann = emulator.generate_key(user_id=uid["ann"], team_id=realm.group_id("/llm/red"))["key"]
    ben = emulator.generate_key(user_id=uid["ben"], team_id=realm.group_id("/llm/red"))["key"]

    realm.add_user_to_group("dan", "/llm/green")  # joins
    kc, ll = cost(session.scoped({uid["dan"]}))
    assert uid["dan"] in team_members(emulator, realm, "/llm/green")
    assert kc <= MAX_KEYCLOAK and ll <= MAX_LITELLM, (kc, ll)

    realm.remove_user_from_group("ben", "/llm/red")  # leaves one team: membership, team key go
    kc, ll = cost(session.scoped({uid["ben"]}))
    assert uid["ben"] not in team_members(emulator, realm, "/llm/red")
    assert uid["ben"] in team_members(emulator, realm, "/llm/blue")
    assert answers(emulator, ben) != 200
    assert kc <= MAX_KEYCLOAK and ll <= MAX_LITELLM, (kc, ll)

    realm.remove_user_from_group("ann", "/llm/red")  # leaves the last team: departed, blocked
    kc, ll = cost(session.scoped({uid["ann"]}))
    assert users(emulator)[uid["ann"]]["metadata"]["scim_active"] is False
    assert answers(emulator, ann) != 200
    assert kc <= MAX_KEYCLOAK and ll <= MAX_LITELLM, (kc, ll)

    realm.disable_user("cat")  # cut off: kill switch
    kc, ll = cost(session.scoped({uid["cat"]}))
    assert users(emulator)[uid["cat"]]["metadata"]["scim_active"] is False
    assert kc <= MAX_KEYCLOAK and ll <= MAX_LITELLM, (kc, ll)

    realm.enable_user("cat")  # back
    kc, ll = cost(session.scoped({uid["cat"]}))
    assert users(emulator)[uid["cat"]]["metadata"]["scim_active"] is True
    assert kc <= MAX_KEYCLOAK and ll <= MAX_LITELLM, (kc, ll)

    realm.delete_user("ben")  # gone from Keycloak: blocked, kept
    kc, ll = cost(session.scoped({uid["ben"]}))
    assert users(emulator)[uid["ben"]]["metadata"]["scim_active"] is False
    assert kc <= MAX_KEYCLOAK and ll <= MAX_LITELLM, (kc, ll)

    nothing = session.scoped({uid["dan"]})  # nothing changed: reads only
    assert nothing.stats.applied == 0 and nothing.stats.ll_writes == 0
    assert session.reconciler.view == session.fresh_read()


def test_group_changes_go_through_the_scoped_path(
    session: Session, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    session.full()
    gid = realm.create_group("/llm/legal")
    realm.add_user_to_group("dan", "/llm/legal")
    report = session.scoped({realm.user_id("dan")}, {gid})
    assert report.stats.result == "success"
    assert team_members(emulator, realm, "/llm/legal") == {realm.user_id("dan")}

    realm.rename_group("/llm/blue", "azure")
    report = session.scoped(set(), {realm.group_id("/llm/azure")})
    assert teams(emulator)[realm.group_id("/llm/azure")]["team_alias"] == "azure"

    red = realm.group_id("/llm/red")
    realm.delete_group("/llm/red")
    report = session.scoped(set(), {red})
    assert report.stats.result == "success", report.error
    assert teams(emulator)[red]["blocked"] is True  # archived, members and keys kept
    assert session.reconciler.view == session.fresh_read()


def test_a_group_change_reads_that_group_from_keycloak_not_the_whole_tree(
    session: Session, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    """A group's event re-reads that group's subtree: a leaf costs one request,
    where the whole tree costs one per parent group (13 here)."""
    session.full()
    red = realm.group_id("/llm/red")
    realm.delete_group("/llm/red")
    kc, _ = cost(session.scoped(set(), {red}))
    assert teams(emulator)[red]["blocked"] is True
    assert kc <= MAX_KEYCLOAK, kc

    realm.rename_group("/llm/blue", "azure")  # re-read with its members: it is a team
    kc, _ = cost(session.scoped(set(), {realm.group_id("/llm/azure")}))
    assert teams(emulator)[realm.group_id("/llm/azure")]["team_alias"] == "azure"
    assert kc <= MAX_KEYCLOAK, kc

    legal = realm.create_group("/llm/legal")  # a new team, then a subgroup under it
    realm.add_user_to_group("dan", "/llm/legal")
    kc, _ = cost(session.scoped({realm.user_id("dan")}, {legal}))
    assert team_members(emulator, realm, "/llm/legal") == {realm.user_id("dan")}
    assert kc <= MAX_KEYCLOAK + 2, kc  # dan's record and groups, legal and its members
    sub = realm.create_group("/llm/legal/eu")
    realm.add_user_to_group("cat", "/llm/legal/eu")
    cost(session.scoped({realm.user_id("cat")}, {sub}))
    assert realm.user_id("cat") in team_members(emulator, realm, "/llm/legal/eu")
    assert session.reconciler.view == session.fresh_read()


def test_a_change_made_by_hand_in_litellm_is_noticed_and_asks_for_a_full_reconcile(
    session: Session, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    session.full()
    red = realm.group_id("/llm/red")
    emulator.add_member(red, realm.user_id("dan"))  # by hand, outside syncd
    report = session.scoped({realm.user_id("dan")})
    assert report.needs_full is not None and f"team {red}" in report.needs_full
    # The fresh row was trusted: dan is not in /llm/red in Keycloak, so he is taken out.
    assert realm.user_id("dan") not in team_members(emulator, realm, "/llm/red")
    assert session.reconciler.view == session.fresh_read()


def test_leaving_one_of_many_teams_costs_no_more_than_leaving_one_team(
    session: Session, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    """Only the team whose membership changed is read (and re-read after the
    write): the other four rosters agree with eve's fresh row and come from the
    view. It read all five, twice, at 13 LiteLLM requests."""
    session.full()
    eve = realm.user_id("eve")
    realm.remove_user_from_group("eve", "/llm/green")
    kc, ll = cost(session.scoped({eve}))
    assert eve not in team_members(emulator, realm, "/llm/green")
    assert eve in team_members(emulator, realm, "/llm/pad01")
    assert kc <= MAX_KEYCLOAK and ll <= MAX_LITELLM, (kc, ll)
    assert session.reconciler.view == session.fresh_read()


def test_a_membership_removed_by_hand_in_another_team_is_noticed(
    session: Session, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    """eve's fresh row no longer lists /llm/pad00, which the view's roster still
    has: that roster is read fresh, and she is put back."""
    session.full()
    eve, pad = realm.user_id("eve"), realm.group_id("/llm/pad00")
    with emulator.client() as http:
        http.post("/team/member_delete", json={"team_id": pad, "user_id": eve}).raise_for_status()
    realm.remove_user_from_group("eve", "/llm/green")
    report = session.scoped({eve})
    assert report.needs_full is not None
    assert eve in team_members(emulator, realm, "/llm/pad00")
    assert eve not in team_members(emulator, realm, "/llm/green")
    assert session.reconciler.view == session.fresh_read()


def test_a_scope_larger_than_a_whole_read_reads_litellm_whole(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A renamed group of 70 members puts all but one user in scope: listing
    their rows costs what listing everyone's does, so the scoped run reads
    LiteLLM whole, with the key's owner kept from the full run (no second
    ``/key/info``)."""
    big = [{"username": f"b{i:03d}", "email": f"b{i:03d}@example.com", "groups": ["/llm/big"]}
           for i in range(70)]
    realm = realm_factory(groups={"/llm/big": {}}, users=big)
    s = Session(settings_for(realm, emulator, tmp_path, monkeypatch))
    try:
        _, paths = rename_big_group(s, realm, emulator)
        assert paths["/v2/team/list"]["reads"] >= 1 and paths["/user/list"]["reads"] >= 1
        assert "/key/info" not in paths, paths
        assert s.reconciler.view == s.fresh_read()
    finally:
        s.close()


def rename_big_group(
    s: Session, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> tuple[RunReport, dict[str, Any]]:
    """After a full run, /llm/big renamed to "huge" and synced by a scoped run:
    its report and the LiteLLM requests it made, by path."""
    assert s.full().stats.result == "success"
    gid = realm.group_id("/llm/big")
    realm.rename_group("/llm/big", "huge")
    emulator.reset_counters()
    report = s.scoped(set(), {gid})
    assert report.stats.result == "success", report.error
    assert teams(emulator)[gid]["team_alias"] == "huge"
    paths: dict[str, Any] = emulator.counters()["paths"]
    return report, paths


def test_a_scope_of_many_people_reads_their_rows_and_every_team_not_everyone(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A renamed group of 40 members among 300 people: 41 rows, more than one
    by one is worth, so the run lists those 40 users' rows in one request and
    every team and key by pages (on a real proxy the pages of users are nine
    tenths of a whole read), not the 3 pages of everyone, and no user alone."""
    big = [{"username": f"b{i:03d}", "email": f"b{i:03d}@example.com", "groups": ["/llm/big"]}
           for i in range(40)]
    rest = [{"username": f"r{i:03d}", "email": f"r{i:03d}@example.com", "groups": ["/llm/rest"]}
            for i in range(260)]
    realm = realm_factory(groups={"/llm/big": {}, "/llm/rest": {}}, users=[*big, *rest])
    s = Session(settings_for(realm, emulator, tmp_path, monkeypatch))
    try:
        report, paths = rename_big_group(s, realm, emulator)
        assert report.needs_full is None
        assert paths["/user/list"]["reads"] == 1, paths
        assert paths["/v2/team/list"]["reads"] >= 1 and paths["/key/list"]["reads"] >= 1
        assert not {"/user/info", "/key/info"} & set(paths), paths
        assert paths["/team/info"]["reads"] == 1  # the renamed team, re-read after its write
        assert s.reconciler.view == s.fresh_read()
    finally:
        s.close()


def test_a_new_hire_with_a_leavers_address_gets_it_through_the_scoped_path(
    session: Session, realm: KeycloakRealm, emulator: EmulatorAdmin
) -> None:
    """Issue 24 on the fast path: the hire's own event brings the release of the
    address along (confirmed by a fresh read of the leaver), without waiting for
    a full reconcile; the leaver stays blocked."""
    session.full()
    cat = realm.user_id("cat")
    realm.delete_user("cat")
    assert session.scoped({cat}).stats.result == "success"
    hire = realm.create_user("cora", email="cat@example.com", groups=["/llm/blue"])
    report = session.scoped({hire})
    assert report.stats.result == "success", report.error or report.warnings
    got = users(emulator)
    assert got[hire]["user_email"] == "cat@example.com"
    assert hire in team_members(emulator, realm, "/llm/blue")
    assert not got[cat]["user_email"]
    assert got[cat]["metadata"]["syncd_released_email"] == "cat@example.com"
    assert got[cat]["metadata"]["scim_active"] is False
    assert session.reconciler.view == session.fresh_read()


CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["join", "leave", "disable", "enable"]),
        st.sampled_from(PEOPLE),
        st.sampled_from(sorted(GROUPS)),
    ),
    min_size=1,
    max_size=6,
)


@pytest.mark.parametrize("read", ["row by row", "around the scope"])
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=CHANGES)
def test_after_every_scoped_run_the_kept_view_is_what_a_full_read_finds(
    session: Session, realm: KeycloakRealm, monkeypatch: pytest.MonkeyPatch, read: str,
    changes: list[tuple[str, str, str]],
) -> None:
    """Examples share the realm and run on from whatever state the last left.
    "around the scope": every scoped read and refresh reads all teams and keys
    and the scope's user rows (`rows_around`), as large scopes do."""
    if read == "around the scope":
        monkeypatch.setattr(Reconciler, "_row_budget", lambda self, view, users: 0)
    if session.reconciler.view is None:
        assert session.full().stats.result == "success"
    uid = realm.user_ids()
    for action, who, path in changes:
        match action:
            case "join":
                realm.add_user_to_group(who, path)
            case "leave":
                realm.remove_user_from_group(who, path)
            case "disable":
                realm.disable_user(who)
            case "enable":
                realm.enable_user(who)
        report = session.scoped({uid[who]})
        assert report.stats.result == "success", report.error or report.warnings
        assert report.needs_full is None
        assert session.reconciler.view == session.fresh_read(), (action, who, path)
