"""Build Keycloak RealmRepresentation dicts for tests and the demo.

Why: tests need many small, precise Keycloak scenarios (nested groups with
attributes, members, disabled users, a service account with chosen roles) and
creating them call by call is slow and noisy.  A single ``POST /admin/realms``
with a full representation imports everything at once.  The same builder
generates ``config/demo-realm.json`` (``python -m devtools.realm demo``), so
the demo and the tests share one well-tested shape.

The output carries no ``id`` fields: Keycloak assigns them, which keeps the
committed demo file deterministic and lets one spec be imported many times
under different realm names.

Spec format::

    build_realm(
        "t1",
        groups={"/llm/research": {"litellm.models": ["gpt-4o"]}, "/finance": {}},
        users=[User("alice", groups=["/llm/research"]), {"username": "bob", "enabled": False}],
    )

``groups`` maps a path to its attributes (a string value means a one-item
list); parents are created implicitly.  A plain iterable of paths works too.
Users reference groups by path; an unknown path is an error (typo guard).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_CLIENT_SECRET",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_REALM",
    "GroupsSpec",
    "User",
    "UserSpec",
    "build_realm",
    "demo_realm",
    "main",
    "normalize_groups",
]

DEFAULT_CLIENT_SECRET = "syncd-test-secret"
DEMO_REALM = "acme"
DEMO_CLIENT_ID = "syncd"
DEMO_CLIENT_SECRET = "demo-secret-change-me"

AttributeValue = str | Sequence[str]
GroupsSpec = Mapping[str, Mapping[str, AttributeValue] | None] | Iterable[str]


@dataclass(frozen=True)
class User:
    """A realm user; ``groups`` are full paths such as ``/llm/research``."""

    username: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    enabled: bool = True
    groups: Sequence[str] = field(default_factory=tuple)
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    password: str | None = None


UserSpec = User | Mapping[str, Any]


def _as_list(value: AttributeValue) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _attributes(attrs: Mapping[str, AttributeValue] | None) -> dict[str, list[str]]:
    return {k: _as_list(v) for k, v in (attrs or {}).items()}


def _normalize_path(path: str) -> str:
    parts = [p for p in path.strip().split("/") if p]
    if not parts:
        raise ValueError(f"empty group path {path!r}")
    return "/" + "/".join(parts)


def normalize_groups(groups: GroupsSpec) -> dict[str, dict[str, list[str]]]:
    """Path -> attributes for every group, parents included, in first-seen order."""
    items: Iterable[tuple[str, Mapping[str, AttributeValue] | None]] = (
        groups.items() if isinstance(groups, Mapping) else ((path, None) for path in groups)
    )
    result: dict[str, dict[str, list[str]]] = {}
    for raw_path, attrs in items:
        path = _normalize_path(raw_path)
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            result.setdefault("/" + "/".join(parts[:depth]), {})
        result.setdefault(path, {}).update(_attributes(attrs))
    return result


def _group_tree(groups: Mapping[str, Mapping[str, list[str]]]) -> list[dict[str, Any]]:
    """Nested GroupRepresentations (``subGroups``) from the flat path map."""
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for path, attrs in groups.items():
        parent, _, name = path.rpartition("/")
        node: dict[str, Any] = {"name": name, "path": path, "subGroups": []}
        if attrs:
            node["attributes"] = {k: list(v) for k, v in attrs.items()}
        nodes[path] = node
        (nodes[parent]["subGroups"] if parent else roots).append(node)
    return roots


def _user_rep(spec: UserSpec, known_groups: Mapping[str, object]) -> dict[str, Any]:
    user = spec if isinstance(spec, User) else User(**dict(spec))
    paths = [_normalize_path(p) for p in user.groups]
    unknown = [p for p in paths if p not in known_groups]
    if unknown:
        raise ValueError(f"user {user.username!r} references unknown groups {unknown}")
    rep: dict[str, Any] = {"username": user.username, "enabled": user.enabled}
    if user.email:
        rep["email"] = user.email
        rep["emailVerified"] = True
    if user.first_name:
        rep["firstName"] = user.first_name
    if user.last_name:
        rep["lastName"] = user.last_name
    if user.attributes:
        rep["attributes"] = _attributes(user.attributes)
    if user.password:
        rep["credentials"] = [{"type": "password", "value": user.password, "temporary": False}]
    if paths:
        rep["groups"] = paths
    return rep


def build_realm(
    name: str,
    *,
    client_id: str = "syncd",
    client_secret: str = DEFAULT_CLIENT_SECRET,
    service_account_roles: Sequence[str] = ("view-users",),
    groups: GroupsSpec = (),
    users: Sequence[UserSpec] = (),
    display_name: str | None = None,
) -> dict[str, Any]:
    """A RealmRepresentation for ``POST /admin/realms`` (full import in one call).

    The client is confidential with only the client-credentials grant
    (``serviceAccountsEnabled``), and its service-account user
    ``service-account-<client_id>`` gets ``realm-management`` client roles
    ``service_account_roles`` — the way a realm export represents them.
    """
    group_map = normalize_groups(groups)
    user_reps = [_user_rep(u, group_map) for u in users]
    names = [u["username"] for u in user_reps]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate usernames {duplicates}")
    service_account: dict[str, Any] = {
        "username": f"service-account-{client_id}",
        "enabled": True,
        "serviceAccountClientId": client_id,
    }
    if service_account_roles:
        service_account["clientRoles"] = {"realm-management": list(service_account_roles)}
    realm: dict[str, Any] = {
        "realm": name,
        "enabled": True,
        "clients": [
            {
                "clientId": client_id,
                "name": "syncd (Keycloak groups -> LiteLLM teams)",
                "enabled": True,
                "protocol": "openid-connect",
                "publicClient": False,
                "clientAuthenticatorType": "client-secret",
                "secret": client_secret,
                "serviceAccountsEnabled": True,
                "standardFlowEnabled": False,
                "implicitFlowEnabled": False,
                "directAccessGrantsEnabled": False,
            }
        ],
        "groups": _group_tree(group_map),
        "users": [*user_reps, service_account],
    }
    if display_name:
        realm["displayName"] = display_name
    return realm


# --------------------------------------------------------------------------- demo

_FIRST = (
    "Ada", "Alan", "Amara", "Ana", "Arjun", "Beatriz", "Chen", "Chloe", "Dario", "Elena",
    "Emeka", "Farah", "Grace", "Hana", "Ibrahim", "Ines", "Jonas", "Kai", "Lars", "Leila",
    "Mateo", "Mei", "Nadia", "Noah", "Olga", "Priya", "Rafael", "Sofia", "Tomas", "Yuki",
)  # fmt: skip
_LAST = (
    "Okafor", "Lindqvist", "Fernandes", "Nakamura", "Kowalski", "Haddad", "Moreau", "Novak",
    "Rossi", "Schmidt", "Tanaka", "Ivanova", "Mensah", "Garcia", "Nguyen", "OBrien",
    "Petrov", "Silva", "Yilmaz", "Andersen", "Kim", "Dubois", "Cohen", "Patel", "Larsen",
    "Costa", "Weber", "Ahmed", "Jensen", "Romero",
)  # fmt: skip


def _person(index: int) -> tuple[str, str]:
    """Deterministic, distinct (first, last) name for demo user ``index`` (< 900)."""
    first = _FIRST[index % len(_FIRST)]
    last = _LAST[(index * 7 + index // len(_FIRST)) % len(_LAST)]
    return first, last


def _demo_user(index: int, groups: Sequence[str], *, enabled: bool = True) -> User:
    first, last = _person(index)
    username = f"{first}.{last}".lower()
    return User(
        username=username,
        email=f"{username}@acme.example",
        first_name=first,
        last_name=last,
        enabled=enabled,
        groups=tuple(groups),
    )


def demo_realm() -> dict[str, Any]:
    """The demo realm ``acme`` (see config/demo-realm.json; regenerate with the CLI).

    Shape, chosen to exercise every sync rule in the demo:
    ``/llm`` parent (no members) with ``/llm/research`` (+ nested ``vision`` and
    ``admins``), ``/llm/platform`` (``litellm.tpm_limit``), ``/llm/support``
    (160 members, more than one members page of 100); ``/finance`` outside /llm
    and not selected; ``/data-science`` outside /llm but opted in with
    ``litellm.sync``.  170 users, one disabled member of /llm/research, several
    users in more than one group.
    """
    groups: dict[str, dict[str, AttributeValue]] = {
        "/llm": {},
        "/llm/research": {},
        "/llm/research/vision": {},
        "/llm/research/admins": {},
        "/llm/platform": {"litellm.tpm_limit": ["100000"]},
        "/llm/support": {},
        "/finance": {},
        "/data-science": {
            "litellm.sync": ["true"],
            "litellm.models": ["gpt-4o-mini"],
            "litellm.max_budget": ["50"],
        },
    }
    research, vision, admins = "/llm/research", "/llm/research/vision", "/llm/research/admins"
    platform, support, finance, ds = "/llm/platform", "/llm/support", "/finance", "/data-science"
    memberships: list[tuple[list[str], bool]] = [
        ([research, admins], True),  # 0: research lead, also an admin
        ([research, vision], True),  # 1
        ([research, ds], True),  # 2: research + data science
        ([research], True),  # 3
        ([research], False),  # 4: the disabled user
        ([vision], True),  # 5: only in the nested group
        ([vision, ds], True),  # 6
        ([platform, admins], True),  # 7: platform engineer, research admin
        ([platform, finance], True),  # 8
        ([ds, finance], True),  # 9
    ]
    users = [_demo_user(i, g, enabled=e) for i, (g, e) in enumerate(memberships)]
    offset = len(users)
    for i in range(160):
        extra = []
        if i % 40 == 0:
            extra.append(platform)  # 4 support people also on the platform team
        if i % 53 == 1:
            extra.append(finance)
        users.append(_demo_user(offset + i, [support, *extra]))
    realm = build_realm(
        DEMO_REALM,
        client_id=DEMO_CLIENT_ID,
        client_secret=DEMO_CLIENT_SECRET,
        # view-events: the daemon part of the demo follows admin events.
        service_account_roles=("view-users", "view-events"),
        groups=groups,
        users=users,
        display_name="ACME (syncd demo)",
    )
    # Admin events recorded, and kept a day (README "Seconds, not minutes").
    return {"realm": realm.pop("realm"), "enabled": realm.pop("enabled"),
            "adminEventsEnabled": True, "attributes": {"adminEventsExpiration": "86400"},
            **realm}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.realm demo > config/demo-realm.json``."""
    parser = argparse.ArgumentParser(prog="python -m devtools.realm")
    parser.add_argument("command", choices=["demo"])
    parser.parse_args(argv)
    json.dump(demo_realm(), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
