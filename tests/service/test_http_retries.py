"""syncd.http's retry rules, request by request (httpx.MockTransport, no server).

Transient failures (connection errors, timeouts, 429 with Retry-After, 502,
503, 504) are retried with backoff within max_attempts and the run's retry
budget; 400, 401, 403, 404, 422 and 500 are answered at once. The daemon
tests (test_retries_live.py) show the same against the emulator over HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from syncd.config import RetrySettings
from syncd.http import ApiClient, RequestCounter, RetryBudget, all_or_nothing
from syncd.metrics import Metrics

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(
    handler: Handler,
    *,
    attempts: int = 4,
    budget: int = 100,
    backoff: float = 0.0,
    max_backoff: float = 5.0,
) -> tuple[ApiClient, Metrics]:
    metrics = Metrics()
    api = ApiClient(
        "litellm", "http://litellm.invalid", verify=True, timeout=5, concurrency=4,
        retries=RetrySettings(
            max_attempts=attempts, initial_backoff_seconds=backoff,
            max_backoff_seconds=max_backoff, max_retries_per_run=budget,
        ),
        budget=RetryBudget(budget), metrics=metrics, counter=RequestCounter(),
    )
    api.client = httpx.AsyncClient(
        base_url="http://litellm.invalid", transport=httpx.MockTransport(handler)
    )
    return api, metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class Script:
    """Answers the first requests with ``statuses``, then 200; counts calls."""

    def __init__(self, *statuses: int | type[Exception], headers: dict[str, str] | None = None):
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.statuses:
            status = self.statuses.pop(0)
            if isinstance(status, type):
                raise status("injected", request=request)  # type: ignore[call-arg]
            return httpx.Response(status, headers=self.headers, json={"error": status})
        return httpx.Response(200, json={"ok": True})


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_transient_statuses_are_retried(status: int) -> None:
    script = Script(status, status)
    api, metrics = make_client(script)
    async with api:
        response = await api.request("GET", "/team/list")
    assert response.status_code == 200
    assert script.calls == 3
    assert sample(metrics, "syncd_http_retries_total", target="litellm") == 2
    assert sample(metrics, "syncd_http_requests_total", target="litellm", method="GET",
                  status=str(status)) == 2


@pytest.mark.parametrize(
    "error", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError]
)
async def test_transport_errors_are_retried(error: type[Exception]) -> None:
    script = Script(error)
    api, metrics = make_client(script)
    async with api:
        response = await api.request("POST", "/team/new", json={})
    assert response.status_code == 200
    assert script.calls == 2
    assert sample(metrics, "syncd_http_requests_total", target="litellm", method="POST",
                  status="error") == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 500])
async def test_permanent_statuses_are_not_retried(status: int) -> None:
    script = Script(status, status, status)
    api, metrics = make_client(script)
    async with api:
        response = await api.request("POST", "/team/member_add", json={})
    assert response.status_code == status
    assert script.calls == 1
    assert sample(metrics, "syncd_http_retries_total", target="litellm") == 0


async def test_attempts_are_bounded_and_the_last_answer_returned() -> None:
    script = Script(*([503] * 10))
    api, metrics = make_client(script, attempts=3)
    async with api:
        response = await api.request("GET", "/user/list")
    assert response.status_code == 503
    assert script.calls == 3
    assert sample(metrics, "syncd_http_retries_total", target="litellm") == 2


async def test_a_transport_error_on_the_last_attempt_is_raised() -> None:
    script = Script(*([httpx.ConnectError] * 5))
    api, _ = make_client(script, attempts=2)
    async with api:
        with pytest.raises(httpx.ConnectError):
            await api.request("GET", "/user/list")
    assert script.calls == 2


async def test_the_run_budget_caps_retries_across_requests() -> None:
    script = Script(*([503] * 20))
    api, metrics = make_client(script, attempts=5, budget=3)
    async with api:
        first = await api.request("GET", "/a")  # 3 retries, then the budget is spent
        second = await api.request("GET", "/b")  # no retry left for this run
    assert (first.status_code, second.status_code) == (503, 503)
    assert script.calls == 4 + 1
    assert sample(metrics, "syncd_http_retries_total", target="litellm") == 3


async def test_retry_after_is_honoured() -> None:
    script = Script(429, headers={"Retry-After": "0.4"})
    api, _ = make_client(script, backoff=0.0)
    started = time.monotonic()
    async with api:
        response = await api.request("GET", "/key/list")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.4


async def test_retry_after_is_capped_by_max_backoff() -> None:
    script = Script(429, headers={"Retry-After": "3600"})
    api, _ = make_client(script, backoff=0.0, max_backoff=0.1)
    started = time.monotonic()
    async with api:
        response = await api.request("GET", "/key/list")
    assert response.status_code == 200
    assert time.monotonic() - started < 2


async def test_backoff_grows_without_retry_after() -> None:
    script = Script(503, 503, 503)
    api, _ = make_client(script, backoff=0.1, max_backoff=1.0)
    started = time.monotonic()
    async with api:
        await api.request("GET", "/team/list")
    # 0.1 + 0.2 + 0.4 (plus up to 0.1 of jitter each): exponential, not constant.
    assert 0.7 <= time.monotonic() - started < 2.0


async def test_all_or_nothing_cancels_the_rest_and_raises_the_failure_itself() -> None:
    finished: list[str] = []

    async def fails() -> str:
        await asyncio.sleep(0.01)
        raise RuntimeError("first read failed")

    async def slow() -> str:
        await asyncio.sleep(5)
        finished.append("slow")
        return "slow"

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="first read failed"):
        await all_or_nothing([fails(), slow(), slow()])
    assert time.monotonic() - started < 1
    await asyncio.sleep(0)
    assert finished == []
    assert await all_or_nothing([asyncio.sleep(0, "a"), asyncio.sleep(0, "b")]) == ["a", "b"]
