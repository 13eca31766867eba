"""`litellm.enterprise_license: true` against an unlicensed proxy (issue 12, defect 5).

LiteLLM refuses the team admin role without a licence. syncd must say so once,
as the configuration problem it is, keep everyone's access (admins are members
as `user`), and not end every later run as a partial failure that looks like a
flaky proxy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.realm import User
from tests.fixtures.keycloak import RealmFactory
from tests.integration.harness import Syncd, members, teams

pytestmark = pytest.mark.integration

LICENCE_ERROR = (
    "litellm.enterprise_license is true but the proxy refused role admin as an enterprise "
    "feature"
)


def test_enterprise_licence_on_an_unlicensed_proxy_is_one_clear_error(
    realm_factory: RealmFactory, emulator: EmulatorAdmin, tmp_path: Path
) -> None:
    realm = realm_factory(
        groups=["/llm/t", "/llm/t/admins", "/llm/u", "/llm/u/admins"],
        users=[User("boss", groups=["/llm/t/admins", "/llm/u/admins"]),
               User("chief", groups=["/llm/t/admins"]),
               User("dev", groups=["/llm/t", "/llm/u"])],
    )
    assert emulator.settings()["licensed"] is False
    syncd = Syncd(realm, emulator, tmp_path, members={"admin_subgroup": "admins"},
                  litellm={"enterprise_license": True})
    uid = realm.user_ids()
    t, u = realm.group_id("/llm/t"), realm.group_id("/llm/u")

    for attempt in range(2):  # the first run, and every later one until the fix
        result = syncd.once()
        assert result.code == 8, result.stdout + result.stderr
        assert result.json["result"] == "failure"
        error = result.json["error"]
        assert LICENCE_ERROR in error and "set it to false" in error
        # One error, not one failure per admin membership.
        assert result.json["failed"] == []
        assert result.json["summary"]["failed"] == 0
        # Access is kept: every admin is a member, as user.
        got = teams(emulator)
        assert members(got[t]) == {uid["boss"]: "user", uid["chief"]: "user",
                                   uid["dev"]: "user"}
        assert members(got[u]) == {uid["boss"]: "user", uid["dev"]: "user"}
        if attempt:
            # Nothing left to do but the refused promotion: one refused request,
            # not three, and nothing else rewritten.
            assert result.json["summary"]["ll_writes"] == 1
    assert result.stderr.count("licence_refused") == 1  # one log event per run

    # The fix the error names converges at once.
    syncd.config["litellm"]["enterprise_license"] = False
    fixed = syncd.once()
    assert fixed.code == 0, fixed.stdout + fixed.stderr
    assert fixed.json["summary"]["ll_writes"] == 0

    # And on a licensed proxy with the flag on, admins are admins.
    emulator.settings(licensed=True)
    syncd.config["litellm"]["enterprise_license"] = True
    licensed = syncd.once()
    assert licensed.code == 0, licensed.stdout + licensed.stderr
    assert members(teams(emulator)[t])[uid["boss"]] == "admin"
    assert members(teams(emulator)[u])[uid["boss"]] == "admin"
