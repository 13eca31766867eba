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
from devtools.litellm_emulator.core import PYDANTIC_ALIAS_WARNING

ACTOR = "syncd-test"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Silence a harmless pydantic warning about LiteLLM models (core.PYDANTIC_ALIAS_WARNING)."""
    for item in items:
        if "tests/emulator/" in str(item.path):
            item.add_marker(
                pytest.mark.filterwarnings(f"ignore:{PYDANTIC_ALIAS_WARNING}:UserWarning")
            )


@pytest.fixture
def api(emulator: EmulatorAdmin) -> Iterator[httpx.Client]:
    with emulator.client(headers={"litellm-changed-by": ACTOR}) as client:
        yield client
