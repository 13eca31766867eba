"""``syncd explain``: why does alice (not) have access, and what happens next?

Read-only. It runs a full dry run (both sides read whole, the plan made and
its destructive steps confirmed by fresh Keycloak reads, nothing written) and
then tells one subject's story from those same facts, in four parts:

1. Keycloak: the user (enabled, direct and effective groups) and, for each
   group, whether it is a team and the rule that decides it (prefix,
   attribute, exclusion, admin subgroup, flatten) -- `syncd.desired.why_team`,
   the function the run itself decides with;
2. the desired LiteLLM state: teams, role and why, team settings with where
   each value comes from (``teams.defaults``, a group attribute, an override);
3. LiteLLM as it is: the user (syncd's or not, linked, ``scim_active``),
   memberships, keys and who blocked them (syncd's marker or someone else);
4. the next run: this subject's operations with the planner's reasons, steps
   the safety brake holds back, steps a fresh read did not confirm, identity
   collisions, and the dates grace periods end.

A full dry run rather than a scoped one: the brake counts the whole run, so
only the whole plan says whether this subject's steps would be held back.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.desired import Group, SourceSnapshot, parse_setting, walk, why_team
from syncd.model import (
    ARCHIVED_AT,
    BLOCKED_AT,
    KEYCLOAK_ID,
    SCIM_ACTIVE,
    Desired,
    TeamSettings,
)
from syncd.ondemand import GroupSubject, UserSubject, resolve_group, resolve_user
from syncd.operations import Names, Op
from syncd.plan import Plan, parse_stamp
from syncd.reconciler import Reconciler, RunReport
from syncd.requests import Full

SETTING_NAMES = tuple(f.name for f in fields(TeamSettings))


# --------------------------------------------------------------------------- pieces


def _op(op: Op, names: Names) -> dict[str, Any]:
    return {
        "op": op.KIND,
        "description": op.describe(names),
        "cause": getattr(op, "cause", None),
        "reason": getattr(op, "reason", None),
        "destructive": op.DESTRUCTIVE,
        "irreversible": op.IRREVERSIBLE,
        "team_id": op.team_id,
        "user_id": op.user_id,
    }


def group_verdicts(
    snapshot: SourceSnapshot, desired: Desired, reconciler: Reconciler, group_ids: list[str],
    direct: set[str],
) -> list[dict[str, Any]]:
    """Each group (and its ancestors): a team or not, why, and which teams its
    members count for. Root first, in tree order."""
    rules = reconciler.rules
    by_id = {g.id: g for g in walk(snapshot.groups)}
    wanted: list[str] = []
    for gid in group_ids:
        chain: list[str] = []
        cursor: str | None = gid
        while cursor is not None and cursor in by_id:
            chain.insert(0, cursor)
            cursor = by_id[cursor].parent_id
        for g in chain or [gid]:
            if g not in wanted:
                wanted.append(g)
    out: list[dict[str, Any]] = []
    for gid in wanted:
        group = by_id.get(gid)
        if group is None:
            out.append({"id": gid, "path": None, "direct": gid in direct, "selected": False,
                        "why": "not in the group tree syncd just read (created since?)",
                        "feeds": []})
            continue
        selected, why = why_team(group, rules)
        feeds = []
        for tid, sources in sorted(desired.sources.items()):
            if gid in sources and tid in desired.teams:
                role = "admin" if (rules.admin_subgroup and group.name == rules.admin_subgroup
                                   and group.parent_id == tid) else rules.default_role
                via = "the team's own group" if tid == gid else (
                    "admin subgroup" if role == "admin" and tid == group.parent_id
                    else "selection.flatten: true")
                feeds.append({"team": desired.teams[tid].path, "team_id": tid, "role": role,
                              "via": via})
        if not selected and not feeds:
            team_above = _team_above(group, by_id, desired)
            if team_above is not None:
                why += (f"; nested in team {team_above.path}, ignored because "
                        "selection.flatten is false")
        out.append({"id": gid, "path": group.path, "direct": gid in direct,
                    "selected": selected, "why": why, "feeds": feeds})
    return out


def _team_above(group: Group, by_id: dict[str, Group], desired: Desired) -> Group | None:
    cursor = group.parent_id
    while cursor is not None and cursor in by_id:
        if cursor in desired.teams:
            return by_id[cursor]
        cursor = by_id[cursor].parent_id
    return None


def settings_sources(group: Group, reconciler: Reconciler) -> dict[str, dict[str, Any]]:
    """Each team setting's value and where it comes from, lowest to highest:
    ``teams.defaults`` < group attribute < ``teams.overrides``."""
    rules = reconciler.rules
    override = rules.overrides.get(group.path)
    out: dict[str, dict[str, Any]] = {}
    for name in SETTING_NAMES:
        value: Any = getattr(rules.defaults, name)
        source = "teams.defaults" if value is not None else "not managed (unset everywhere)"
        note = None
        raw = group.attributes.get(rules.attribute_prefix + name)
        if raw:
            try:
                value = parse_setting(name, raw)
                source = f"group attribute {rules.attribute_prefix}{name}"
            except ValueError as exc:
                note = f"group attribute {rules.attribute_prefix}{name}={raw!r} ignored ({exc})"
        if override is not None and getattr(override, name) is not None:
            value = getattr(override, name)
            source = f"teams.overrides[{group.path}]"
        out[name] = {"value": list(value) if isinstance(value, tuple) else value,
                     "from": source, **({"note": note} if note else {})}
    return out


def _deadline(stamp: Any, grace_days: float) -> str:
    since = parse_stamp(stamp)
    if since is None:
        return "unknown (unreadable stamp: counts as now)"
    return (since + timedelta(days=grace_days)).date().isoformat()


# --------------------------------------------------------------------------- user


async def explain_user(reconciler: Reconciler, report: RunReport,
                       subject: UserSubject) -> dict[str, Any]:
    desired, actual, plan = report.desired, report.actual, report.plan
    snapshot = reconciler.snapshot
    assert desired is not None and actual is not None and plan is not None
    assert snapshot is not None
    settings = reconciler.settings
    names = report.names
    kc = subject.keycloak_id
    record = subject.record
    direct: list[dict[str, Any]] = []
    if kc is not None and record is not None:
        direct = await reconciler.clients.reader.read_user_groups(kc)
    direct_ids = [str(g["id"]) for g in direct if "id" in g]
    keycloak: dict[str, Any] = {
        "exists": record is not None,
        "id": kc,
        "username": subject.username,
        "email": subject.email,
        "enabled": bool(record.get("enabled", True)) if record is not None else None,
        "direct_groups": sorted(str(g.get("path", g.get("id"))) for g in direct),
        "groups": group_verdicts(snapshot, desired, reconciler, direct_ids, set(direct_ids)),
    }
    # -- desired
    by_id = {g.id: g for g in walk(snapshot.groups)}
    teams_wanted = []
    for tid, team in sorted(desired.teams.items(), key=lambda kv: kv[1].path):
        if kc is None or kc not in team.members:
            continue
        role = team.members[kc]
        group = by_id.get(tid)
        teams_wanted.append({
            "team_id": tid, "path": team.path, "alias": team.alias, "role": role,
            "role_why": _role_why(reconciler, group, subject, role),
            "settings": settings_sources(group, reconciler) if group else {},
        })
    if kc is not None and kc in desired.users:
        state = f"a member of {len(teams_wanted)} team(s)"
    elif record is None:
        state = "departed: no such Keycloak user (deleted)"
    elif not keycloak["enabled"]:
        state = "departed: disabled in Keycloak"
    else:
        state = "departed: in no selected group"
    wanted = {"state": state, "teams": teams_wanted}
    # -- actual
    litellm_users = []
    for uid in subject.litellm_ids:
        user = actual.users.get(uid)
        if user is None:
            litellm_users.append({"user_id": uid, "exists": False})
            continue
        meta = user.metadata
        litellm_users.append({
            "user_id": uid, "exists": True, "email": user.email, "user_role": user.role,
            "managed": user.managed,
            "linked": user.managed and KEYCLOAK_ID in meta,
            "keycloak_id": meta.get(KEYCLOAK_ID),
            "scim_active": meta.get(SCIM_ACTIVE),
            "blocked_since": meta.get(BLOCKED_AT),
        })
    ids = set(subject.litellm_ids)
    memberships = [
        {"team_id": tid, "team": team.alias or tid, "role": team.members[uid], "user_id": uid,
         "managed": team.managed, "blocked": team.blocked}
        for tid, team in sorted(actual.teams.items()) for uid in sorted(ids & set(team.members))
    ]
    keys = [
        {"key": key.label, "user_id": key.user_id, "team": names.team(key.team_id),
         "blocked": key.blocked,
         "blocked_by": (None if not key.blocked else "syncd (syncd_blocked marker)"
                        if key.blocked_by_syncd else "someone else (no syncd marker; syncd "
                        "never unblocks it)")}
        for key in sorted(actual.keys.values(), key=lambda k: (k.label, k.token))
        if key.user_id in ids
    ]
    # -- next run
    def mine(op: Op) -> bool:
        return op.user_id is not None and op.user_id in ids

    deadlines = []
    dep = settings.departures
    for row in litellm_users:
        since = row.get("blocked_since")
        if row.get("exists") and since is not None:
            deadlines.append(f"blocked since {since}: " + _departure_deadline(
                since, dep.policy, dep.grace_days, dep.delete_users))
    if not deadlines and any(op.KIND == "block_user" and mine(op)
                             for op in (*plan.operations, *plan.held_back)):
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        deadlines.append("once the next run blocks them: " + _departure_deadline(
            now, dep.policy, dep.grace_days, dep.delete_users))
    markers = {x for x in (kc, subject.username, subject.email, *ids) if x}
    nxt = _next_run(plan, names, mine, markers, deadlines)
    return {"subject": {"kind": "user", "text": subject.text, "matched_by": subject.matched_by,
                        "keycloak_id": kc, "litellm_ids": list(subject.litellm_ids)},
            "keycloak": keycloak, "desired": wanted,
            "litellm": {"users": litellm_users, "memberships": memberships, "keys": keys},
            "next_run": nxt}


def _departure_deadline(since: Any, policy: str, grace_days: float, delete_users: bool) -> str:
    if policy == "delete":
        what = "memberships removed and keys deleted"
        if delete_users:
            what += ", the user deleted"
        return (f"{what} on {_deadline(since, grace_days)} under departures.policy: delete "
                f"(grace_days {grace_days:g}) unless they come back")
    return "stays blocked, memberships and keys kept, nothing deleted (departures.policy: block)"


def _role_why(reconciler: Reconciler, group: Group | None, subject: UserSubject,
              role: str) -> str:
    rules, settings = reconciler.rules, reconciler.settings
    if role == "admin":
        admins = group.attributes.get(rules.attribute_prefix + "admins", []) if group else []
        if subject.username in admins:
            why = f"listed in group attribute {rules.attribute_prefix}admins"
        elif rules.default_role == "admin":
            why = "members.default_role: admin"
        else:
            why = f"member of the admin subgroup {rules.admin_subgroup}"
        if not settings.litellm.enterprise_license:
            why += "; synced as user because litellm.enterprise_license is false"
        return why
    return "members.default_role: user"


def _next_run(plan: Plan, names: Names, mine: Any, markers: set[str],
              deadlines: list[str]) -> dict[str, Any]:
    ops = [_op(op, names) for op in plan.operations if mine(op)]
    held = [_op(op, names) for op in plan.held_back if mine(op)]
    unconfirmed = [{**_op(op, names), "why": why} for op, why in plan.unconfirmed if mine(op)]
    warnings = [w for w in plan.warnings if any(m in w for m in markers)]
    brake = None
    if plan.braked:
        brake = (f"the safety brake is engaged for the next run: {plan.brake_reason}; "
                 f"{len(plan.held_back)} destructive step(s) held back in all, "
                 f"{len(held)} of them this subject's (--force on syncd --once or syncd sync "
                 "applies them once)")
    if not (ops or held or unconfirmed) and warnings:
        summary = "nothing: this subject is left out of the run (see identity below)"
    elif not (ops or held or unconfirmed):
        summary = "nothing: LiteLLM already matches Keycloak for this subject"
    else:
        summary = (f"{len(ops)} change(s), {len(held)} held back by the brake, "
                   f"{len(unconfirmed)} not confirmed by a fresh Keycloak read")
    return {"summary": summary, "operations": ops, "held_back": held, "brake": brake,
            "unconfirmed": unconfirmed, "warnings": warnings, "deadlines": deadlines}


# --------------------------------------------------------------------------- group


def explain_group(reconciler: Reconciler, report: RunReport,
                  subject: GroupSubject) -> dict[str, Any]:
    desired, actual, plan = report.desired, report.actual, report.plan
    snapshot = reconciler.snapshot
    assert desired is not None and actual is not None and plan is not None
    assert snapshot is not None
    group, names, settings = subject.group, report.names, reconciler.settings
    gid = group.id
    verdicts = group_verdicts(snapshot, desired, reconciler, [gid], {gid})
    children = [{"path": c.path, **dict(zip(("selected", "why"), why_team(c, reconciler.rules),
                                             strict=True))} for c in group.children]
    keycloak = {"id": gid, "path": group.path, "direct_members": len(snapshot.members.get(gid, [])),
                "groups": verdicts, "subgroups": children}
    team = desired.teams.get(gid)
    wanted: dict[str, Any] = {"team": None}
    if team is not None:
        wanted = {"team": {"team_id": gid, "alias": team.alias, "members": len(team.members),
                           "admins": sum(r == "admin" for r in team.members.values()),
                           "settings": settings_sources(group, reconciler)}}
    row = actual.teams.get(gid)
    litellm: dict[str, Any] = {"team": None}
    if row is not None:
        litellm = {"team": {"team_id": gid, "alias": row.alias, "managed": row.managed,
                            "blocked": row.blocked, "archived_at": row.metadata.get(ARCHIVED_AT),
                            "members": len(set(row.members) - {actual.service_user_id}),
                            **row.settings.managed_items()}}
    clashes = [t.team_id for t in actual.teams.values()
               if t.team_id != gid and not t.managed and team is not None
               and t.alias == team.alias]
    if clashes:
        litellm["alias_clash"] = (f"unmanaged team(s) {', '.join(clashes)} carry the alias "
                                  f"{team.alias if team else ''!r} too")
    deadlines = []
    archived = row.metadata.get(ARCHIVED_AT) if row is not None else None
    if archived is not None:
        t = settings.teams
        if t.removed_policy == "delete":
            deadlines.append(f"archived since {archived}: team deleted on "
                             f"{_deadline(archived, t.removed_grace_days)} under "
                             "teams.removed_policy: delete unless its group comes back")
        else:
            deadlines.append(f"archived since {archived}: stays blocked, members and keys kept "
                             "(teams.removed_policy: block)")

    def mine(op: Op) -> bool:
        return op.team_id == gid

    nxt = _next_run(plan, names, mine, {gid, group.path}, deadlines)
    nxt["skipped"] = [s.reason for s in plan.skipped if s.team_id == gid]
    return {"subject": {"kind": "group", "text": subject.text, "group_id": gid,
                        "path": group.path},
            "keycloak": keycloak, "desired": wanted, "litellm": litellm, "next_run": nxt}


# --------------------------------------------------------------------------- text


def render(doc: dict[str, Any]) -> str:
    """The explanation for a person at night: facts first, then what happens."""
    lines: list[str] = []
    subj, kc, want, ll, nxt = (doc[k] for k in ("subject", "keycloak", "desired", "litellm",
                                                "next_run"))
    if subj["kind"] == "user":
        lines.append(f"Subject: {subj['text']!r} matched by {subj['matched_by']}; Keycloak id "
                     f"{subj['keycloak_id']}; LiteLLM user id(s) {', '.join(subj['litellm_ids'])}")
        lines.append("Keycloak")
        if not kc["exists"]:
            lines.append("  no such user in Keycloak (deleted, or never there)")
        else:
            lines.append(f"  user {kc['username']} <{kc['email']}>: "
                         f"{'enabled' if kc['enabled'] else 'DISABLED'}")
            lines.append(f"  direct groups: {', '.join(kc['direct_groups']) or 'none'}")
        _groups(lines, kc["groups"])
        lines.append(f"Desired in LiteLLM: {want['state']}")
        for t in want["teams"]:
            lines.append(f"  team {t['path']} (alias {t['alias']}) as {t['role']}: {t['role_why']}")
            _settings(lines, t["settings"], "    ")
        lines.append("LiteLLM now")
        for u in ll["users"]:
            if not u["exists"]:
                lines.append(f"  user {u['user_id']}: does not exist")
                continue
            owner = ("syncd's (syncd_managed)" + (f", linked to Keycloak id {u['keycloak_id']}"
                                                  if u["linked"] else "")
                     if u["managed"] else "NOT syncd's (no syncd_managed marker)")
            active = "kill switch ON (scim_active false)" if u["scim_active"] is False else \
                "scim_active not false"
            blocked = f"; blocked by syncd since {u['blocked_since']}" if u["blocked_since"] \
                else ""
            lines.append(f"  user {u['user_id']}: {owner}; {active}{blocked}")
        for m in ll["memberships"]:
            lines.append(f"  member of {m['team']} [{m['team_id']}] as {m['role']}"
                         f"{'' if m['managed'] else ' (team not managed by syncd)'}"
                         f"{' (team BLOCKED)' if m['blocked'] else ''}")
        if not ll["memberships"]:
            lines.append("  member of no team")
        for k in ll["keys"]:
            state = f"blocked by {k['blocked_by']}" if k["blocked"] else "active"
            lines.append(f"  key {k['key']} ({k['team']}): {state}")
    else:
        lines.append(f"Subject: group {subj['path']} [{subj['group_id']}]")
        lines.append(f"Keycloak: {kc['direct_members']} direct member(s)")
        _groups(lines, kc["groups"])
        for c in kc["subgroups"]:
            lines.append(f"  subgroup {c['path']}: {'a team' if c['selected'] else 'not a team'}"
                         f" ({c['why']})")
        team = want["team"]
        if team is None:
            lines.append("Desired in LiteLLM: no team (the group is not selected)")
        else:
            lines.append(f"Desired in LiteLLM: team alias {team['alias']}, {team['members']} "
                         f"member(s), {team['admins']} admin(s)")
            _settings(lines, team["settings"], "  ")
        row = ll["team"]
        if row is None:
            lines.append("LiteLLM now: no such team")
        else:
            lines.append(f"LiteLLM now: team {row['alias']}, "
                         f"{'managed by syncd' if row['managed'] else 'NOT managed by syncd'}, "
                         f"{'BLOCKED' if row['blocked'] else 'not blocked'}, "
                         f"{row['members']} member(s)")
        if ll.get("alias_clash"):
            lines.append(f"  alias clash: {ll['alias_clash']}")
    lines.append(f"Next run: {nxt['summary']}")
    for op in nxt["operations"]:
        lines.append(f"  {'-' if op['destructive'] else '+'} {op['description']}"
                     + (" [irreversible]" if op["irreversible"] else ""))
    if nxt["brake"]:
        lines.append(f"  brake: {nxt['brake']}")
    for op in nxt["held_back"]:
        lines.append(f"  held back: {op['description']}")
    for op in nxt["unconfirmed"]:
        lines.append(f"  not confirmed: {op['description']}: {op['why']}")
    for reason in nxt.get("skipped", []):
        lines.append(f"  skipped: {reason}")
    for w in nxt["warnings"]:
        lines.append(f"  identity: {w}")
    for d in nxt["deadlines"]:
        lines.append(f"  grace: {d}")
    return "\n".join(lines)


def _groups(lines: list[str], groups: list[dict[str, Any]]) -> None:
    for g in groups:
        mark = "TEAM" if g["selected"] else "----"
        feeds = "; ".join(f"counts for {f['team']} as {f['role']} ({f['via']})"
                          for f in g["feeds"])
        direct = "" if g["direct"] else " (parent)"
        lines.append(f"  [{mark}] {g['path'] or g['id']}{direct}: {g['why']}"
                     + (f"; {feeds}" if feeds else ""))


def _settings(lines: list[str], settings: dict[str, dict[str, Any]], indent: str) -> None:
    for name, entry in settings.items():
        if entry["value"] is None and "note" not in entry:
            continue
        lines.append(f"{indent}{name} = {entry['value']} from {entry['from']}"
                     + (f" ({entry['note']})" if "note" in entry else ""))


# --------------------------------------------------------------------------- entry


async def explain(reconciler: Reconciler, *, user: str | None,
                  group: str | None) -> dict[str, Any]:
    """A full dry run, then one subject's story. Raises the run's error (a read
    that failed) or UnknownSubject; writes nothing either way."""
    report = await reconciler.run(Full("explain"), mode="dry-run")
    if report.failure is not None:
        raise report.failure
    if group is not None:
        doc = explain_group(reconciler, report, resolve_group(reconciler, group))
    else:
        doc = await explain_user(reconciler, report, await resolve_user(reconciler, user or ""))
    doc["run"] = {"run_id": report.run_id, "warnings": list(report.run_warnings),
                  "changes_in_whole_plan": report.stats.planned}
    return doc
