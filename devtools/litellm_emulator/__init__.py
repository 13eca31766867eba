"""LiteLLM management-API emulator (issue #2): a real HTTP server standing in for the LiteLLM proxy.

See README.md in this folder for what it emulates, the source each behaviour
follows, and how to run it.
"""

import os

# Before anything imports litellm: it would otherwise try to download its
# model price table at import time, and there is no network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.litellm_emulator.app import create_app
from devtools.litellm_emulator.core import EmulatorSettings
from devtools.litellm_emulator.faults import FaultConfig, FaultRule
from devtools.litellm_emulator.server import EmulatorProcess, EmulatorServer

__all__ = [
    "EmulatorAdmin",
    "EmulatorProcess",
    "EmulatorServer",
    "EmulatorSettings",
    "FaultConfig",
    "FaultRule",
    "create_app",
]
