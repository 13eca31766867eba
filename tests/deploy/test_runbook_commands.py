"""Each alert's runbook section starts from the command that explains it (issue 23):
``syncd doctor``, ``syncd explain`` or ``syncd sync``, or, for a daemon that is not
running at all, kubectl. The URL of each alert's anchor is checked in test_alerts."""

from __future__ import annotations

import re

from tests.deploy.conftest import ALERTS_FILE, RUNBOOK, load_yaml
from tests.deploy.test_alerts import rules


def sections() -> dict[str, str]:
    text = RUNBOOK.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    return {p.splitlines()[0].strip(): p for p in parts[1:]}


def test_every_alert_section_says_which_command_to_start_with() -> None:
    found = sections()
    names = {r.get("annotations", {}).get("runbook_url", "").rpartition("#")[2]
             for r in rules(load_yaml(ALERTS_FILE)).values()}
    for name, section in found.items():
        if name.lower() not in names:
            continue
        start = re.search(r"^\*\*Start with\*\* (.+)$", section, re.MULTILINE)
        assert start, f"runbook section {name} does not say which command to start with"
        assert "syncd doctor" in start.group(1), (name, start.group(1))
    assert sum(name.lower() in names for name in found) >= 7
