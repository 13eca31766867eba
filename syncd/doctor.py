"""``syncd doctor``: is the set-up right, before switching syncd on or at night?

Read-only. One line per check, PASS / WARN / FAIL, each WARN and FAIL with the
fix in the words of the configuration or of Keycloak's admin console. Exit 0
when everything passes, 1 with warnings, 2 with a failure (3 remains a bad
configuration, found before anything is contacted).

The checks go in the order a person would follow them: can syncd reach and
log in to Keycloak, may it read what it needs (and, for the fast path, admin
events); can it reach LiteLLM with a key fit to administer it; then, from a
full dry run (nothing written), what the configuration selects, the identity
collisions and links the next run would meet, what syncd owns that has lost
its source, and how the next run's destructive steps compare with the brake.
A check that cannot run because an earlier one failed says so; it is never
shown as passing.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from syncd.desired import walk
from syncd.errors import SourceReadError, SyncdError, TargetReadError
from syncd.http import all_or_nothing, describe_transport_error
from syncd.identity import owner
from syncd.model import ARCHIVED_AT, PROXY_ADMIN_ROLES
from syncd.operations import LinkUser
from syncd.reconciler import Reconciler, RunReport
from syncd.requests import Full

Status = Literal["PASS", "WARN", "FAIL"]
TESTED_LITELLM = "1.110.2"
SHOWN = 5  # names listed in one line before "and N more"

EXIT_OK, EXIT_WARN, EXIT_FAIL = 0, 1, 2


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -- fix: {self.fix}" if self.fix and self.status != "PASS" else ""
        return f"{self.status}  {self.name:<28} {self.detail}{fix}"

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail,
                "fix": self.fix}


def exit_code(checks: list[Check]) -> int:
    if any(c.status == "FAIL" for c in checks):
        return EXIT_FAIL
    if any(c.status == "WARN" for c in checks):
        return EXIT_WARN
    return EXIT_OK


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


async def _attempt(work: Awaitable[Any]) -> Any:
    try:
        return await work
    except SyncdError as exc:
        return exc


# --------------------------------------------------------------------------- Keycloak


async def keycloak_checks(reconciler: Reconciler) -> tuple[list[Check], bool]:
    """The Keycloak lines, and whether syncd can read what a run needs."""
    settings, clients = reconciler.settings, reconciler.clients
    kc = settings.keycloak
    out: list[Check] = []
    try:
        response = await clients.keycloak_api.request("GET", f"/realms/{kc.realm}")
    except httpx.TransportError as exc:
        out.append(Check("keycloak.reachable", "FAIL",
                         f"{kc.url}: {describe_transport_error(exc)}",
                         "check keycloak.url, DNS, TLS (keycloak.ca_bundle) and network policy"))
        return out, False
    if response.status_code == 404:
        out.append(Check("keycloak.reachable", "FAIL", f"realm {kc.realm!r} does not exist at "
                         f"{kc.url}", "check keycloak.realm (the realm's name, not its "
                         "display name)"))
        return out, False
    if response.status_code != 200:
        out.append(Check("keycloak.reachable", "FAIL", f"{kc.url}/realms/{kc.realm} answered "
                         f"HTTP {response.status_code}", "check keycloak.url"))
        return out, False
    out.append(Check("keycloak.reachable", "PASS", f"realm {kc.realm} at {kc.url}"))
    token = await _attempt(clients.tokens.get())
    if isinstance(token, SyncdError):
        out.append(Check("keycloak.credentials", "FAIL", str(token),
                         f"check keycloak.client_id ({kc.client_id}) and the client secret; the "
                         "client must be confidential with 'Service accounts' enabled"))
        return out, False
    out.append(Check("keycloak.credentials", "PASS",
                     f"client {kc.client_id} logs in with its service account"))
    users = await _attempt(clients.reader.find_users("username", "syncd-doctor-probe"))
    readable = not isinstance(users, SyncdError)
    if not readable:
        out.append(Check("keycloak.view-users", "FAIL", str(users),
                         f"grant the service account of client {kc.client_id} the "
                         "realm-management role view-users"))
    else:
        out.append(Check("keycloak.view-users", "PASS", "the service account may read users "
                         "and groups"))
    out.extend(await _event_checks(reconciler))
    return out, readable


async def _event_checks(reconciler: Reconciler) -> list[Check]:
    """The fast path's prerequisites. With ``events.enabled: auto`` a missing one
    is a warning (syncd falls back to full reconciles); with ``true`` a failure."""
    settings, reader = reconciler.settings, reconciler.clients.reader
    mode = settings.events.enabled
    if mode == "false":
        return [Check("keycloak.view-events", "PASS", "the event fast path is off "
                      "(events.enabled: false): full reconciles only")]
    bad: Status = "FAIL" if mode == "true" else "WARN"
    consequence = ("syncd will not start (events.enabled: true)" if bad == "FAIL" else
                   "the fast path stays off; changes wait for the next full reconcile")
    config = await _attempt(reader.read_events_config())
    if isinstance(config, SyncdError):
        return [Check("keycloak.view-events", bad, f"{config}; {consequence}",
                      f"grant the service account of client {settings.keycloak.client_id} the "
                      "realm-management role view-events")]
    out = [Check("keycloak.view-events", "PASS", "the service account may read admin events")]
    if config.get("adminEventsEnabled") is not True:
        out.append(Check("keycloak.admin-events", bad, f"the realm records no admin events; "
                         f"{consequence}", "Realm settings -> Events -> Admin events settings: "
                         "Save events on (PUT /admin/realms/{realm}/events/config "
                         "adminEventsEnabled: true)"))
    else:
        details = "on" if config.get("adminEventsDetailsEnabled") else \
            "off (syncd does not need them)"
        out.append(Check("keycloak.admin-events", "PASS",
                         f"admin events are recorded; include representation {details}"))
    out.append(await _expiration(reconciler, bad))
    return out


async def _expiration(reconciler: Reconciler, bad: Status) -> Check:
    """The realm attribute ``adminEventsExpiration``: only a realm representation
    carries it, and Keycloak shows a realm's attributes only to view-realm."""
    clients, kc = reconciler.clients, reconciler.settings.keycloak
    fix = ("Realm settings -> Events -> Admin events settings: set an Expiration (realm "
           "attribute adminEventsExpiration, e.g. 604800 s)")
    try:
        response = await clients.keycloak_api.request(
            "GET", f"/admin/realms/{kc.realm}", auth=clients.tokens)
        realm = response.json() if response.status_code == 200 else None
    except (httpx.TransportError, ValueError):
        realm = None
    attributes = realm.get("attributes") if isinstance(realm, dict) else None
    if not isinstance(attributes, dict):
        return Check("keycloak.events-expiration", "WARN",
                     "cannot see the realm's adminEventsExpiration (it needs view-realm)",
                     "check it by hand: " + fix + "; or grant view-realm so doctor can")
    value = attributes.get("adminEventsExpiration")
    if value in (None, "", "0"):
        return Check("keycloak.events-expiration", "WARN",
                     "admin events never expire: the events table grows for ever", fix)
    return Check("keycloak.events-expiration", "PASS", f"admin events expire after {value} s")


# --------------------------------------------------------------------------- LiteLLM


async def litellm_checks(reconciler: Reconciler, plan_admins: int | None) -> tuple[
    list[Check], bool
]:
    settings, clients = reconciler.settings, reconciler.clients
    ll = settings.litellm
    out: list[Check] = []
    try:
        response = await clients.litellm_api.request("GET", "/health/liveliness")
        reachable = response.status_code < 500
    except httpx.TransportError as exc:
        out.append(Check("litellm.reachable", "FAIL", f"{ll.url}: {describe_transport_error(exc)}",
                         "check litellm.url, DNS, TLS (litellm.ca_bundle) and network policy"))
        return out, False
    if not reachable:
        out.append(Check("litellm.reachable", "FAIL", f"{ll.url}/health/liveliness answered "
                         f"HTTP {response.status_code}", "check the proxy's logs"))
        return out, False
    out.append(Check("litellm.reachable", "PASS", f"proxy at {ll.url}"))
    who = await _attempt(clients.target.whoami())
    if isinstance(who, SyncdError):
        out.append(Check("litellm.key-role", "FAIL", str(who),
                         "give syncd a proxy_admin user's key (docs/deploy.md)"))
        return out, False
    if who.master:
        out.append(Check("litellm.key-role", "WARN", "syncd holds the master key",
                         "mint a key for a dedicated proxy_admin user (svc-syncd) and use it "
                         "as litellm.api_key (docs/deploy.md)"))
    elif who.role in PROXY_ADMIN_ROLES:
        alias = f" (key {who.key_alias})" if who.key_alias else ""
        out.append(Check("litellm.key-role", "PASS",
                         f"the key acts as {who.user_id}, role {who.role}{alias}"))
    out.append(await _version(reconciler))
    out.append(_licence(settings.litellm.enterprise_license, plan_admins))
    return out, True


async def _version(reconciler: Reconciler) -> Check:
    """``/health/readiness`` reports ``litellm_version`` on a real proxy."""
    try:
        response = await reconciler.clients.litellm_api.request("GET", "/health/readiness")
        body = response.json() if response.status_code == 200 else None
    except (httpx.TransportError, ValueError):
        body = None
    version = body.get("litellm_version") if isinstance(body, dict) else None
    if not isinstance(version, str):
        return Check("litellm.version", "PASS", "the proxy does not report its version")
    if version != TESTED_LITELLM:
        return Check("litellm.version", "WARN", f"LiteLLM {version}; syncd is tested against "
                     f"{TESTED_LITELLM}", "read the release notes for the team and key "
                     "endpoints, or run syncd --once --dry-run first")
    return Check("litellm.version", "PASS", f"LiteLLM {version}")


def _licence(enterprise: bool, admins: int | None) -> Check:
    if enterprise:
        return Check("litellm.licence", "PASS", "litellm.enterprise_license: true: team "
                     "admins are promoted (a proxy without a licence refuses: exit 8)")
    if admins:
        return Check("litellm.licence", "WARN", f"{admins} team admin(s) in Keycloak are synced "
                     "as user: LiteLLM refuses the team admin role without an enterprise "
                     "licence", "with a licence, set litellm.enterprise_license: true")
    return Check("litellm.licence", "PASS", "no team admins to sync; no licence needed")


# --------------------------------------------------------------------------- the plan


def plan_checks(reconciler: Reconciler, report: RunReport) -> list[Check]:
    desired, actual, plan, snapshot = (report.desired, report.actual, report.plan,
                                       reconciler.snapshot)
    assert desired is not None and actual is not None and plan is not None
    assert snapshot is not None
    rules, safety = reconciler.rules, reconciler.settings.safety
    out: list[Check] = []
    teams = len(desired.teams)
    if teams == 0:
        out.append(Check("selection.groups", "FAIL", f"0 of {desired.groups_seen} groups "
                         "selected: syncd would refuse to run", "check selection.path_prefixes,"
                         " selection.attribute and selection.exclude_paths"))
    else:
        out.append(Check("selection.groups", "PASS",
                         f"{teams} of {desired.groups_seen} groups selected as teams"))
    by_id = {g.id: g for g in walk(snapshot.groups)}
    fed = {g for sources in desired.sources.values() for g in sources}
    ignored = []
    if not rules.flatten:
        for group in by_id.values():
            if group.id in desired.teams or group.id in fed:
                continue
            parent = group.parent_id
            while parent is not None and parent in by_id and parent not in desired.teams:
                parent = by_id[parent].parent_id
            if parent is not None and parent in desired.teams:
                ignored.append(group.path)
    if ignored:
        out.append(Check("selection.nested", "WARN", f"{len(ignored)} group(s) nested in a team "
                         f"are ignored because selection.flatten is false: "
                         f"{_names(sorted(ignored))}", "set selection.flatten: true if their "
                         "members should count for the team above, or select them"))
    else:
        out.append(Check("selection.nested", "PASS", "no nested group is ignored"))
    # identity
    collisions = [w for w in plan.warnings if w.startswith("Keycloak user ")]
    if plan.unresolved_identities:
        out.append(Check("identity.collisions", "WARN",
                         f"{plan.unresolved_identities} Keycloak user(s) left out for an "
                         f"identity collision: {_names(collisions)}",
                         "README 'Existing LiteLLM users': users.link_by_email or "
                         "users.id_from, or fix the emails in Keycloak"))
    elif plan.withheld_emails:
        out.append(Check("identity.collisions", "WARN",
                         f"{plan.withheld_emails} Keycloak user(s) synced with their teams but "
                         f"without their email (shared, or held by another LiteLLM user): "
                         f"{_names(collisions)}",
                         "README 'Existing LiteLLM users': make the emails unique in Keycloak, "
                         "verify them for users.link_by_email, or free the address in LiteLLM"))
    else:
        out.append(Check("identity.collisions", "PASS", "no identity collision"))
    links = [op for op in (*plan.operations, *plan.held_back) if isinstance(op, LinkUser)]
    if links:
        out.append(Check("identity.links", "WARN", f"the next run takes over {len(links)} "
                         f"existing LiteLLM user(s): {_names(sorted(op.user_id for op in links))}",
                         "expected before the first run; check with syncd --once --dry-run"))
    else:
        out.append(Check("identity.links", "PASS", "the next run links no existing user"))
    # ownership
    managed = actual.managed_teams
    mine = {t.alias for t in managed.values() if t.alias} | {
        t.alias for t in desired.teams.values()}
    clashes = sorted(f"{t.alias} [{tid}]" for tid, t in actual.teams.items()
                     if not t.managed and t.alias in mine and tid not in desired.teams)
    if clashes:
        out.append(Check("ownership.alias-clash", "WARN", f"{len(clashes)} team(s) not "
                         f"managed by syncd share an alias with syncd's: {_names(clashes)}",
                         "rename or delete the hand-made team in LiteLLM: people pick teams "
                         "by alias"))
    else:
        out.append(Check("ownership.alias-clash", "PASS", "no team shares an alias with "
                         "syncd's"))
    orphans = sorted(f"{t.alias or tid} [{tid}]" + (" archived" if ARCHIVED_AT in t.metadata
                                                     else "")
                     for tid, t in managed.items() if tid not in desired.groups_known)
    if orphans:
        t = reconciler.settings.teams
        out.append(Check("ownership.orphan-teams", "WARN", f"{len(orphans)} syncd team(s) whose "
                         f"group is gone: {_names(orphans)}", "expected after a group is "
                         f"deleted: they are blocked (teams.removed_policy: {t.removed_policy},"
                         f" removed_grace_days {t.removed_grace_days:g}); re-create the group "
                         "if it was a mistake"))
    else:
        out.append(Check("ownership.orphan-teams", "PASS", "every syncd team has its group"))
    out.append(_brake(plan, safety.max_blocked, safety.max_deleted))
    return out


def _brake(plan: Any, max_blocked: int, max_deleted: int) -> Check:
    destructive = plan.destructive_count
    irreversible = sum(op.IRREVERSIBLE for op in (*plan.operations, *plan.held_back))
    if plan.braked:
        return Check("ownership.brake", "WARN", f"the next run would hold back "
                     f"{len(plan.held_back)} destructive step(s): {plan.brake_reason}",
                     "look at syncd --once --dry-run; if it is right, syncd --once --force "
                     "applies it once")
    return Check("ownership.brake", "PASS", f"the next run takes {destructive} destructive "
                 f"step(s), {irreversible} irreversible (limits: safety.max_blocked "
                 f"{max_blocked}, safety.max_deleted {max_deleted})")


async def orphan_users(reconciler: Reconciler, report: RunReport) -> Check:
    """syncd's users whose Keycloak user is gone: one fresh read each of the
    managed users the desired state does not name."""
    desired, actual = report.desired, report.actual
    assert desired is not None and actual is not None
    reader = reconciler.clients.reader
    wanted = sorted({kc for user in actual.users.values()
                     if user.managed and (kc := owner(user)) and kc not in desired.users})
    records = await all_or_nothing(reader.read_user(kc) for kc in wanted)
    gone = [kc for kc, record in zip(wanted, records, strict=True) if record is None]
    if gone:
        return Check("ownership.orphan-users", "WARN", f"{len(gone)} syncd user(s) whose "
                     f"Keycloak user is gone: {_names(gone)}", "expected after people leave: "
                     "they are blocked, deleted only under departures.policy: delete after "
                     "grace_days")
    return Check("ownership.orphan-users", "PASS", "every syncd user still has a Keycloak user")


# --------------------------------------------------------------------------- entry


async def diagnose(reconciler: Reconciler) -> list[Check]:
    """Every check, in order; nothing is written (the plan comes from a dry run)."""
    reconciler.clients.start_run()
    kc_checks, kc_ok = await keycloak_checks(reconciler)
    ll_checks, ll_ok = await litellm_checks(reconciler, None)
    checks = [*kc_checks, *ll_checks]
    if not (kc_ok and ll_ok):
        checks.append(Check("plan", "FAIL", "not checked: selection, identity and ownership "
                            "need both sides readable", "fix the failures above first"))
        return checks
    report = await reconciler.run(Full("doctor"), mode="dry-run")
    if report.failure is not None or report.plan is None:
        stage = "Keycloak" if isinstance(report.failure, SourceReadError) else (
            "LiteLLM" if isinstance(report.failure, TargetReadError) else "the plan")
        checks.append(Check("plan", "FAIL", f"the dry run failed reading {stage}: "
                            f"{report.error}", "fix what the message names"))
        return checks
    desired = report.desired
    assert desired is not None
    admins = sum(r == "admin" for t in desired.teams.values() for r in t.members.values())
    checks = [c if c.name != "litellm.licence" else
              _licence(reconciler.settings.litellm.enterprise_license, admins) for c in checks]
    checks.extend(plan_checks(reconciler, report))
    checks.append(await _attempt_check(orphan_users(reconciler, report)))
    return checks


async def _attempt_check(work: Awaitable[Check]) -> Check:
    try:
        return await work
    except SyncdError as exc:
        return Check("ownership.orphan-users", "FAIL", str(exc), "check Keycloak")


def render(checks: list[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "WARN", "FAIL")}
    lines = [c.line() for c in checks]
    lines.append(f"doctor: {counts['PASS']} passed, {counts['WARN']} warning(s), "
                 f"{counts['FAIL']} failure(s)")
    return "\n".join(lines)


__all__ = ["Check", "diagnose", "exit_code", "render"]
