"""Who an operator means, and provisioning that one subject now.

``syncd sync --user alice`` and ``syncd explain alice`` take what a person
types at night: a Keycloak username, an email, a Keycloak user id, or the
LiteLLM user id they saw in the admin UI; or a group path. This module turns
that into one Keycloak user (or group) and the LiteLLM users that may be
theirs, and refuses to guess when the text names nobody or several people.

Provisioning on demand is no separate code path: it is the daemon's scoped
request (`syncd.requests.Scoped`) for that one subject, over a kept state read
whole just before (`Reconciler.observe`), so it goes through the same planner,
the same brake and the same fresh confirmation of each destructive step as
every other run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from syncd.desired import Group, walk
from syncd.errors import UnknownSubject
from syncd.events import Hints
from syncd.identity import owner, rule_id
from syncd.model import Actual, DesiredUser
from syncd.reconciler import Reconciler, RunReport
from syncd.requests import Scoped


@dataclass(frozen=True)
class UserSubject:
    """One person, as both sides know them. `keycloak_id` is None only for a
    LiteLLM user no Keycloak user can be found for (not syncd's, or gone)."""

    text: str  # what the operator typed
    matched_by: str  # "Keycloak username", "email", "Keycloak id", "LiteLLM user id"
    keycloak_id: str | None
    record: dict[str, Any] | None = None  # Keycloak's user record; None: no such user
    litellm_ids: tuple[str, ...] = ()  # LiteLLM users that are or may become theirs

    @property
    def username(self) -> str | None:
        value = (self.record or {}).get("username")
        return str(value) if value is not None else None

    @property
    def email(self) -> str | None:
        value = (self.record or {}).get("email")
        return str(value) if value is not None else None

    @property
    def label(self) -> str:
        name = self.username or self.text
        return f"{name} [{self.keycloak_id}]" if self.keycloak_id else name


@dataclass(frozen=True)
class GroupSubject:
    text: str
    group: Group
    ancestors: tuple[Group, ...] = field(default_factory=tuple)  # root first

    @property
    def label(self) -> str:
        return f"{self.group.path} [{self.group.id}]"


async def resolve_user(reconciler: Reconciler, text: str) -> UserSubject:
    """The one person `text` names. Keycloak first (id, then exact username and
    email), then LiteLLM's user ids in the kept view (the user syncd recorded as
    theirs). Needs the kept state (`Reconciler.observe`)."""
    reader, view = reconciler.clients.reader, reconciler.view
    assert view is not None, "observe() first"
    text = text.strip()
    if not text:
        raise UnknownSubject("an empty subject names nobody")
    found: dict[str, tuple[dict[str, Any], str]] = {}
    by_id, by_name, by_email = await asyncio.gather(
        reader.read_user(text),
        reader.find_users("username", text),
        reader.find_users("email", text) if "@" in text else _nothing(),
    )
    if by_id is not None and "id" in by_id:
        found.setdefault(str(by_id["id"]), (by_id, "Keycloak id"))
    for how, records in (("Keycloak username", by_name), ("email", by_email)):
        for record in records:
            if "id" in record:
                found.setdefault(str(record["id"]), (record, how))
    litellm_user = view.users.get(text)
    if not found and litellm_user is not None:
        kc = owner(litellm_user)
        record = await reader.read_user(kc) if kc else None
        return UserSubject(text, "LiteLLM user id", kc, record,
                           _litellm_ids(reconciler, view, kc, record, also=text))
    if not found:
        raise UnknownSubject(
            f"no Keycloak user (id, username or email) and no LiteLLM user id is {text!r} "
            f"in realm {reconciler.settings.keycloak.realm!r}"
        )
    if len(found) > 1:
        who = ", ".join(f"{r.get('username')} [{kc}] by {how}"
                        for kc, (r, how) in sorted(found.items()))
        raise UnknownSubject(f"{text!r} matches {len(found)} Keycloak users: {who}; "
                             "give the Keycloak user id")
    (kc, (record, how)), = found.items()
    return UserSubject(text, how, kc, record, _litellm_ids(reconciler, view, kc, record))


async def _nothing() -> list[dict[str, Any]]:
    return []


def _litellm_ids(reconciler: Reconciler, view: Actual, kc: str | None,
                 record: dict[str, Any] | None, *, also: str | None = None) -> tuple[str, ...]:
    """The LiteLLM ids of Keycloak user `kc`: under ``users.id_from``, and any
    LiteLLM user syncd recorded as theirs."""
    out: set[str] = {also} if also else set()
    if kc is not None:
        if record is not None:
            email = record.get("email")
            person = DesiredUser(kc, str(record.get("username", "")),
                                 str(email) if email else None)
            uid = rule_id(person, reconciler.settings.users.id_from)
            if uid is not None:
                out.add(uid)
        elif reconciler.settings.users.id_from == "id":
            out.add(kc)
        out.update(uid for uid, user in view.users.items() if owner(user) == kc)
    return tuple(sorted(out))


def resolve_group(reconciler: Reconciler, text: str) -> GroupSubject:
    """The group at path `text` (or with that id) in the kept snapshot."""
    snapshot = reconciler.snapshot
    assert snapshot is not None, "observe() first"
    wanted = text.strip()
    if wanted and not wanted.startswith("/") and not _looks_like_id(wanted, snapshot.groups):
        wanted = "/" + wanted
    by_id = {g.id: g for g in walk(snapshot.groups)}
    for group in by_id.values():
        if group.path == wanted or group.id == wanted:
            chain: list[Group] = []
            parent = group.parent_id
            while parent is not None and parent in by_id:
                chain.insert(0, by_id[parent])
                parent = by_id[parent].parent_id
            return GroupSubject(text, group, tuple(chain))
    raise UnknownSubject(
        f"no group with path or id {text!r} in realm {reconciler.settings.keycloak.realm!r}"
    )


def _looks_like_id(text: str, groups: list[Group]) -> bool:
    return any(g.id == text for g in walk(groups))


async def sync_subject(
    reconciler: Reconciler, subject: UserSubject | GroupSubject, *, force: bool,
    stop: asyncio.Event | None,
) -> RunReport:
    """Apply the plan of one subject now: a scoped request, as an admin event
    about it would make, over the state `observe` just read."""
    if isinstance(subject, GroupSubject):
        hints = Hints(groups={subject.group.id})
    else:
        if subject.keycloak_id is None:
            raise UnknownSubject(
                f"LiteLLM user {subject.text!r} carries no Keycloak user id and is not "
                "syncd's: there is nothing to sync for it (syncd explain says more)"
            )
        hints = Hints(users={subject.keycloak_id})
    return await reconciler.run(Scoped(hints), mode="apply", force=force, stop=stop)
