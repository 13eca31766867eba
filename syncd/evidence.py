"""Fresh evidence for destructive steps: what must still be true, and the verdict.

A bulk read of Keycloak can be stale or torn: a member removed while syncd
pages through a group shifts every later page, and the person at the page
boundary is never seen. Acting on such a read would revoke someone who should
keep access. So the planner attaches to every destructive operation the claim
that justifies it (`UserOutside`, `GroupGone`), and before anything
destructive is applied, `syncd.confirm` re-reads each subject directly and
asks `judge_user` / `judge_group` whether the claim still holds. A claim that
cannot be confirmed drops the operation for this run; the next run re-plans.

The verdicts are pure functions of the fresh replies, so the rules are tested
without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SERVICE_ACCOUNT_PREFIX = "service-account-"


@dataclass(frozen=True)
class UserOutside:
    """The Keycloak user is outside `teams` (None: outside every selected team):
    deleted, disabled, or in none of the groups that feed those teams."""

    user_id: str  # the LiteLLM user id the operation is about
    keycloak_id: str  # the Keycloak user to re-read (the same id unless linked)
    teams: frozenset[str] | None = None
    # Releasing this address from the user (syncd.identity): stricter than being
    # outside the groups. Confirmed only when the Keycloak user is deleted,
    # disabled, or no longer has this email.
    email: str | None = None

    def describe(self) -> str:
        if self.email is not None:
            return (f"user {self.keycloak_id} is deleted or disabled, or no longer has "
                    f"the email {self.email}")
        teams = self.teams
        where = "any selected group" if teams is None else f"team {', '.join(sorted(teams))}"
        return f"user {self.keycloak_id} is outside {where}"


@dataclass(frozen=True)
class GroupGone:
    """The group behind a managed team is deleted or no longer selected."""

    team_id: str

    def describe(self) -> str:
        return f"group {self.team_id} is deleted or not selected"


Evidence = UserOutside | GroupGone


@dataclass(frozen=True)
class SourceFacts:
    """What the bulk read knew, for judging fresh replies against it."""

    sources: Mapping[str, frozenset[str]]  # team_id -> ids of the groups feeding it
    groups_known: frozenset[str]  # every group id the bulk read saw


def judge_user(
    claim: UserOutside,
    user: Mapping[str, Any] | None,
    groups: Sequence[Mapping[str, Any]] | None,
    facts: SourceFacts,
) -> str | None:
    """None if the fresh reads confirm the claim, else why they do not.

    `user` is the reply of ``GET /users/{id}`` (None: 404, the user is gone);
    `groups` that of ``GET /users/{id}/groups``. A group the bulk read never
    saw is taken as disagreement: it may feed a team through a path or
    attribute rule, and when in doubt syncd keeps access.
    """
    if user is None:
        return None
    if user.get("enabled", True) is False:
        return None
    if claim.email is not None:
        now = user.get("email")
        if not isinstance(now, str) or now.strip().casefold() != claim.email.strip().casefold():
            return None
        return f"Keycloak still has the user, enabled, with the email {claim.email}"
    if str(user.get("username", "")).startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    if groups is None:
        return "the user's groups could not be read"
    teams = claim.teams if claim.teams is not None else frozenset(facts.sources)
    feeding = frozenset().union(*(facts.sources.get(t, frozenset()) for t in teams))
    for group in groups:
        gid = str(group.get("id", ""))
        path = group.get("path", gid)
        if gid in feeding:
            return f"Keycloak now shows the user, enabled, in {path}"
        if gid not in facts.groups_known:
            return f"the user is in {path}, a group the bulk read did not see"
    return None


def judge_group(
    claim: GroupGone,
    group: Mapping[str, Any] | None,
    still_selected: Callable[[Mapping[str, Any]], bool],
) -> str | None:
    """None if the group is gone (404) or no longer selected, else why not."""
    if group is None:
        return None
    if still_selected(group):
        return f"Keycloak still has group {group.get('path', claim.team_id)} and it is selected"
    return None
