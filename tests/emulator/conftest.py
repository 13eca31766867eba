"""Helpers for the emulator's own tests.

The ``litellm_emulator``/``emulator`` fixtures come from ``tests.fixtures.emulator``,
registered in ``tests/conftest.py``. ``api`` is a plain httpx client on the
emulated LiteLLM API, authenticated with the master key and sending
``litellm-changed-by`` like syncd does.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from devtools.litellm_emulator.admin import EmulatorAdmin

ACTOR = "syncd-test"


@pytest.fixture
def api(emulator: EmulatorAdmin) -> Iterator[httpx.Client]:
    with emulator.client(headers={"litellm-changed-by": ACTOR}) as client:
        yield client
