"""``create_app``: the FastAPI application that emulates LiteLLM's management API.

Besides the emulated LiteLLM routes it serves admin routes under
``/_emulator/`` (master key required) that let tests and people inspect and
steer the emulator: state dump with audit log, reset, behaviour switches,
fault injection, request counters and a key-authentication oracle.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from devtools.litellm_emulator import keys, llm, teams, users
from devtools.litellm_emulator.auth import check_key
from devtools.litellm_emulator.core import (
    LITELLM_VERSION,
    Emulator,
    EmulatorSettings,
    get_emulator,
    require_master_key,
)
from devtools.litellm_emulator.costs import CostMiddleware, CostModel
from devtools.litellm_emulator.errors import EmulatorHTTPError, public_validation_errors
from devtools.litellm_emulator.faults import EmulatorMiddleware, FaultConfig

EmulatorDep = Annotated[Emulator, Depends(get_emulator)]


class SettingsPatch(BaseModel):
    """Body of ``PUT /_emulator/settings``: any subset of the behaviour switches."""

    model_config = ConfigDict(extra="forbid")

    auto_add_proxy_admin: bool | None = None
    delete_keys_on_member_delete: bool | None = None
    licensed: bool | None = None


class AuthCheckRequest(BaseModel):
    key: str | None = None


def create_app(settings: EmulatorSettings | None = None) -> FastAPI:
    """Build one emulator; its state lives on ``app.state.emulator``."""
    emulator = Emulator(settings or EmulatorSettings())
    app = FastAPI(title="litellm-emulator", version=LITELLM_VERSION, docs_url=None, redoc_url=None)
    app.state.emulator = emulator

    @app.exception_handler(EmulatorHTTPError)
    async def _emulator_error(request: Request, exc: EmulatorHTTPError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=exc.body, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """``proxy_server.py::otel_request_validation_exception_handler``: 422 with a list."""
        return JSONResponse(
            status_code=422, content={"detail": public_validation_errors(list(exc.errors()))}
        )

    @app.get("/health/liveliness")
    async def health_liveliness() -> str:
        """``health_endpoints/_health_endpoints.py::health_liveliness``: public, no auth."""
        return "I'm alive!"

    app.include_router(teams.router)
    app.include_router(users.router)
    app.include_router(keys.router)
    app.include_router(llm.router)
    _add_admin_routes(app)
    app.add_middleware(CostMiddleware, meter=emulator.costs)
    app.add_middleware(
        EmulatorMiddleware,
        injector=emulator.injector,
        counters=emulator.counters,
        record_write=emulator.record_write,
    )
    return app


def _add_admin_routes(app: FastAPI) -> None:
    guard = [Depends(require_master_key)]

    @app.get("/_emulator/state", dependencies=guard)
    async def get_state(emulator: EmulatorDep) -> dict[str, Any]:
        """Every table, the audit log of writes and any membership inconsistencies."""
        snapshot = emulator.state.snapshot()
        snapshot["settings"] = emulator.settings.behaviour()
        return snapshot

    @app.post("/_emulator/reset", dependencies=guard)
    async def reset(emulator: EmulatorDep) -> dict[str, str]:
        """Empty tables and counters; behaviour switches and faults back to start-up values."""
        emulator.reset()
        return {"status": "reset"}

    @app.post("/_emulator/audit/clear", dependencies=guard)
    async def clear_audit(emulator: EmulatorDep) -> dict[str, str]:
        """Empty the audit log only: a fixture's seeding is then not counted as writes."""
        with emulator.state.lock:
            emulator.state.audit.clear()
        return {"status": "cleared"}

    @app.get("/_emulator/settings", dependencies=guard)
    async def get_settings(emulator: EmulatorDep) -> dict[str, bool]:
        return emulator.settings.behaviour()

    @app.put("/_emulator/settings", dependencies=guard)
    async def put_settings(patch: SettingsPatch, emulator: EmulatorDep) -> dict[str, bool]:
        for name, value in patch.model_dump(exclude_none=True).items():
            setattr(emulator.settings, name, value)
        return emulator.settings.behaviour()

    @app.get("/_emulator/faults", dependencies=guard)
    async def get_faults(emulator: EmulatorDep) -> dict[str, Any]:
        return {**emulator.injector.config.model_dump(), "fired": emulator.injector.fired_counts()}

    @app.put("/_emulator/faults", dependencies=guard)
    async def put_faults(config: FaultConfig, emulator: EmulatorDep) -> dict[str, Any]:
        """Replace the fault rules (and reseed); ``{"rules": []}`` turns faults off."""
        emulator.settings.faults = config
        emulator.injector.configure(config)
        return {**emulator.injector.config.model_dump(), "fired": emulator.injector.fired_counts()}

    @app.get("/_emulator/costs", dependencies=guard)
    async def get_costs(emulator: EmulatorDep) -> dict[str, Any]:
        """The cost model, with transactions expired and create races answered so far."""
        return emulator.costs.snapshot()

    @app.put("/_emulator/costs", dependencies=guard)
    async def put_costs(model: CostModel, emulator: EmulatorDep) -> dict[str, Any]:
        """Replace the cost model (``{}`` turns costs off); see ``costs.py`` and the README."""
        emulator.settings.costs = model
        emulator.costs.configure(model)
        return emulator.costs.snapshot()

    @app.get("/_emulator/counters", dependencies=guard)
    async def get_counters(emulator: EmulatorDep) -> dict[str, Any]:
        return emulator.counters.snapshot()

    @app.post("/_emulator/counters/reset", dependencies=guard)
    async def reset_counters(emulator: EmulatorDep) -> dict[str, Any]:
        emulator.counters.reset()
        return emulator.counters.snapshot()

    @app.post("/_emulator/auth_check", dependencies=guard)
    async def auth_check(body: AuthCheckRequest, emulator: EmulatorDep) -> dict[str, object]:
        """Would an LLM request with ``key`` pass ``user_api_key_auth``? See ``auth.check_key``."""
        return check_key(emulator.state, emulator.settings.master_key, body.key).as_dict()
