"""The client-facing routes a virtual key is for: ``/v1/models`` and ``/chat/completions``.

They exist so a test or a demo can prove that a key is really cut off (or
really works) with the call an application makes, not with an emulator-only
oracle. Auth is the real order (``auth.resolve_caller``, with the request's
``model`` for the key and team model-access checks). The models are the
fake ones in ``EmulatorSettings.models``; a completion is canned text.

Source (litellm 1.110.2 ``proxy/``): ``proxy_server.py::model_list`` (both
paths, rows from ``utils.py::create_model_info_response``),
``auth/model_checks.py::get_complete_model_list`` (key models, else team
models, else every proxy model), ``proxy_server.py::chat_completion`` (both
paths) and ``route_llm_request.py::ProxyModelNotFoundError``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request

from devtools.litellm_emulator.core import authenticate, get_emulator
from devtools.litellm_emulator.errors import openai_error

router = APIRouter()

DEFAULT_MODEL_CREATED_AT_TIME = 1677610602
"""``litellm.constants.DEFAULT_MODEL_CREATED_AT_TIME``: ``created`` of every listed model."""

CANNED_REPLY = "Hello from the litellm-emulator: this key works."

_SPECIAL = frozenset({"*", "all-proxy-models", "all-team-models"})


def _allowed_models(request: Request) -> list[str]:
    """``get_complete_model_list``: the key's models, else its team's, else all."""
    emulator = get_emulator(request)
    caller = authenticate(request)
    proxy_models = list(emulator.settings.models)
    with emulator.state.lock:
        key = emulator.state.keys.get(caller.token) if caller.token else None
        team = emulator.state.teams.get(caller.team_id) if caller.team_id else None
        key_models = [m for m in (key.models if key else []) if isinstance(m, str)]
        team_models = [m for m in (team.models if team else []) if isinstance(m, str)]
    for models in (key_models, team_models):
        if models and not _SPECIAL.intersection(models):
            return models
    return proxy_models


@router.get("/v1/models")
@router.get("/models")
async def model_list(request: Request) -> dict[str, Any]:
    """``proxy_server.py::model_list``: ``{"data": [...], "object": "list"}``."""
    return {
        "data": [
            {
                "id": name,
                "object": "model",
                "created": DEFAULT_MODEL_CREATED_AT_TIME,
                "owned_by": "openai",
            }
            for name in _allowed_models(request)
        ],
        "object": "list",
    }


@router.post("/chat/completions")
@router.post("/v1/chat/completions")
async def chat_completion(request: Request) -> dict[str, Any]:
    """``proxy_server.py::chat_completion`` with a canned answer from a fake model.

    Auth runs with the body's ``model`` (key model access, then the rest of
    the order); a model the proxy does not serve is a 400 (E1).
    """
    try:
        body = await request.json()
    except ValueError:
        body = {}
    model = body.get("model") if isinstance(body, dict) else None
    authenticate(request, model=model if isinstance(model, str) else None)
    emulator = get_emulator(request)
    if not isinstance(model, str) or model not in emulator.settings.models:
        raise openai_error(
            400,
            {
                "error": f"/chat/completions: Invalid model name passed in model={model}. "
                "Call `/v1/models` to view available models for your key."
            },
        )
    prompt_tokens = sum(
        len(str(m.get("content", "")).split())
        for m in body.get("messages") or []
        if isinstance(m, dict)
    )
    completion_tokens = len(CANNED_REPLY.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CANNED_REPLY},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
