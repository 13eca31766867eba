"""One execute loop for every mode (issue 20): a dry run goes through the same
steps as a real run, confirmation reads included, so the plan it shows is the
plan a real run then applies; and a plan that holds only steps left out is
shown as such, never as "no changes"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import KeycloakRealm, RealmFactory
from tests.integration.harness import Syncd

pytestmark = pytest.mark.integration

GROUPS: dict[str, dict[str, str]] = {"/llm/red": {}, "/llm/blue": {}, "/llm/gone": {}}
PEOPLE = [
    User("ann", "ann@example.com", groups=["/llm/red", "/llm/blue"]),
    User("ben", "ben@example.com", groups=["/llm/red"]),
    User("cat", "cat@example.com", groups=["/llm/blue", "/llm/gone"]),
    User("dan", "dan@example.com", groups=["/llm/red"]),
]


def ops(plan: dict[str, Any], part: str = "operations") -> list[tuple[str, str]]:
    return sorted((op["op"], op["description"]) for op in plan[part])


def test_the_dry_run_shows_exactly_what_the_real_run_then_applies(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm: KeycloakRealm = realm_factory(groups=GROUPS, users=PEOPLE)
    syncd = Syncd(realm, emulator, tmp_path)
    assert syncd.once().code == 0
    uid, gid = realm.user_ids(), realm.group_ids()
    emulator.generate_key(user_id=uid["ann"], team_id=gid["/llm/red"])
    emulator.generate_key(user_id=uid["ben"], key_alias="ben-laptop")
    # Every kind of change at once: a move, a departure, a disabled user, a gone group.
    realm.remove_user_from_group("ann", "/llm/red")
    realm.remove_user_from_group("ben", "/llm/red")
    realm.disable_user("dan")
    realm.delete_group("/llm/gone")
    realm.create_user("eve", email="eve@example.com", groups=["/llm/blue"])

    writes_before = len(emulator.audit())
    dry = syncd.once("--dry-run")
    assert dry.code == 0, dry.stderr
    assert dry.json["summary"]["kc_confirm_reads"] > 0  # confirmation ran in the dry run
    assert len(emulator.audit()) == writes_before  # and wrote nothing

    real = syncd.once()
    assert real.code == 0, real.stderr
    plan, shown = real.json["plan"], dry.json["plan"]
    assert ops(shown) == ops(plan) and ops(shown)
    assert ops(shown, "unconfirmed") == ops(plan, "unconfirmed")
    assert real.json["summary"]["applied"] == len(plan["operations"])
    assert len(emulator.audit()) > writes_before
    assert syncd.once("--check").code == 0  # nothing left


def test_a_plan_with_only_skipped_teams_is_shown_not_called_no_changes(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(groups={"/llm/red": {}}, users=[User("ann", "ann@example.com",
                                                                 groups=["/llm/red"])])
    # Someone made a team with the group's id before syncd ran: not syncd's, not adopted.
    emulator.create_team(team_id=realm.group_id("/llm/red"), team_alias="red (by hand)")
    syncd = Syncd(realm, emulator, tmp_path)
    syncd.once()  # creates ann; red is skipped
    dry = syncd.once("--dry-run")
    assert dry.code == 0, dry.stderr
    plan = dry.json["plan"]
    assert plan is not None, "a plan that leaves a team out is still a plan"
    assert plan["operations"] == [] and [s["team_id"] for s in plan["skipped"]] == [
        realm.group_id("/llm/red")
    ]
    text = syncd.run("--once", "--dry-run")
    assert "No changes: LiteLLM matches Keycloak" not in text.stdout
    assert "Skipped team" in text.stdout
