"""The three error body shapes the real LiteLLM proxy answers with.

Which shape an endpoint uses depends on how the real handler is written, not on
the error: handlers wrapped in ``try: ... except Exception as e: raise
handle_exception_on_proxy(e)`` turn every ``HTTPException`` into the OpenAI
shape with the detail's Python ``repr`` as message (E1); handlers without that
wrapper let FastAPI's default handler answer ``{"detail": ...}`` (E2); and a
``ProxyException`` raised directly keeps its own ``type``/``param`` (E3).
Tests of syncd's error handling are only meaningful if these stay distinct.

Source: litellm 1.110.2 ``proxy/utils.py::handle_exception_on_proxy``,
``proxy/common_utils/openai_error_payload.py::openai_shaped_proxy_exception``,
``proxy/proxy_server.py::openai_exception_handler`` and
``otel_request_validation_exception_handler``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TYPE_BY_STATUS: dict[int, str] = {401: "auth_error", 403: "auth_error", 429: "rate_limit_error"}


class EmulatorHTTPError(Exception):
    """An answer the emulator sends as-is; raised anywhere inside a handler."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body!r}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def error_type_for_status(status: int) -> str:
    """``error.type`` of an ``HTTPException`` turned into a ProxyException.

    401/403 become ``auth_error`` because the real catch-all marks an
    ``HTTPException`` that rejects the caller that way (``_rejects_the_caller``).
    """
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "invalid_request_error" if status < 500 else "internal_server_error"


def openai_error(status: int, detail: Any) -> EmulatorHTTPError:
    """E1: an ``HTTPException(status, detail)`` passed through ``handle_exception_on_proxy``.

    The message is ``str(detail)``: a dict detail shows up as its Python repr,
    e.g. ``"{'error': 'Team id = t1 already exists. ...'}"``.
    """
    message = detail if isinstance(detail, str) else str(detail)
    return proxy_error(status, message, error_type_for_status(status), None)


def detail_error(status: int, detail: Any) -> EmulatorHTTPError:
    """E2: FastAPI's default ``{"detail": ...}`` for an uncaught ``HTTPException``."""
    return EmulatorHTTPError(status, {"detail": detail})


def proxy_error(
    status: int,
    message: str,
    error_type: str,
    param: str | None,
    headers: Mapping[str, str] | None = None,
) -> EmulatorHTTPError:
    """E3: a ``ProxyException`` rendered by ``openai_exception_handler``."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": str(status)}}
    return EmulatorHTTPError(status, body, headers)


def public_validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """LiteLLM strips FastAPI's 422 entries to ``type``/``loc``/``msg`` (no ``input``/``ctx``)."""
    return [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in errors]
