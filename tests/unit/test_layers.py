"""The module map as a test: which syncd module may import which.

The data flow is configuration -> reading the source -> the desired state ->
reading the target -> planning -> applying -> reporting. The pure middle
(building the desired state, identity, planning, operations, the event tail's
bookkeeping) must stay free of I/O so it can be tested with properties, and
only the entry points hold the whole `Settings`; the rest get narrow, typed
arguments (a settings section at most). A new import that breaks this fails
here, with the module and the import named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "syncd"

# No I/O: neither syncd's clients nor the libraries that talk to the network.
PURE = {"model", "errors", "secrets", "evidence", "identity", "operations", "desired",
        "fastpath", "events", "plan", "report", "view", "requests"}
IO_MODULES = {"http", "keycloak", "litellm", "apply", "confirm", "reconciler", "follower", "worker",
              "service", "cli", "metrics", "logs", "ondemand", "explain", "doctor"}
IO_LIBRARIES = {"httpx", "keycloak", "prometheus_client", "apscheduler", "socket"}
# Who may hold the whole configuration (the others get one section at most).
HOLDS_SETTINGS = {"config", "reconciler", "follower", "service", "cli", "metrics"}


def imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import in syncd/<module>.py."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_every_module_has_a_place_on_the_map() -> None:
    assert set(MODULES) == PURE | IO_MODULES | {"config"}


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_do_no_io(module: str) -> None:
    for name, _ in imports(module):
        root, _, rest = name.partition(".")
        assert root not in IO_LIBRARIES, f"syncd/{module}.py imports {name}"
        if root == "syncd":
            assert rest not in IO_MODULES, f"syncd/{module}.py imports {name}"


@pytest.mark.parametrize("module", MODULES)
def test_only_entry_points_hold_the_whole_settings(module: str) -> None:
    if module in HOLDS_SETTINGS:
        return
    for name, names in imports(module):
        assert not (name == "syncd.config" and "Settings" in names), (
            f"syncd/{module}.py imports Settings; pass it a section or plain values"
        )


def test_applying_does_not_depend_on_reporting() -> None:
    assert all(name != "syncd.report" for name, _ in imports("apply"))


def test_no_module_imports_one_later_in_the_flow() -> None:
    """Readers and the planner never import the run or the daemon around them."""
    order = ["reconciler", "ondemand", "explain", "doctor", "follower", "worker", "service", "cli"]
    later = set(order)
    for module in MODULES:
        allowed = set(order[order.index(module) + 1:]) if module in order else later
        for name, _ in imports(module):
            if name.startswith("syncd."):
                assert name.split(".")[1] not in allowed, f"syncd/{module}.py imports {name}"
