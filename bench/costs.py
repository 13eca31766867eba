"""Time LiteLLM's list and write endpoints: ``python -m bench.costs --target real|emulator``.

Seeds a proxy with ``--users`` users in ``--teams`` teams (each user in one team,
members added in batches of 25 at concurrency 2, which the real proxy takes
without expiring), then times, each ``--repeat`` times, median reported:

* reads: ``/v2/team/list``, ``/user/list``, ``/key/list`` (with and without
  ``return_full_object``) per page size, ``/team/info`` and ``/user/info``;
* writes: ``/team/member_add`` per batch size alone, then batches of 25 and
  100 at concurrency 4 and 8 (each to its own team, and all to one team: how
  many were answered 500/503), ``/team/new``, ``/user/new``, ``/key/delete``.

``--target real`` starts a fresh real LiteLLM 1.110.2 proxy with
``../shared/real-litellm/start.sh``; ``--target emulator`` starts the emulator
with ``--costs real-1.110.2`` (or ``--costs off``), so the same figures on both
say how far the emulator's cost model is from the proxy. Figures are printed as a
Markdown table (the emulator README's "Costs") and written as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from devtools.litellm_emulator.server import EmulatorProcess

MASTER = "sk-bench-costs-master"
REAL_LITELLM = Path(os.environ.get("REAL_LITELLM_DIR", "/work/shared/real-litellm"))
HEADERS = {"Authorization": f"Bearer {MASTER}", "litellm-changed-by": "bench-costs"}


def log(message: str) -> None:
    print(f"[costs {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Target:
    """A proxy to measure: the real one (start.sh) or the emulator (own process)."""

    def __init__(self, kind: str, costs: str, port: int) -> None:
        self.kind, self.costs, self.port = kind, costs, port
        self.url = ""
        self.pid: int | None = None
        self.emulator: EmulatorProcess | None = None

    def start(self) -> Target:
        if self.kind == "real":
            self.url, self.pid = start_real(self.port)
        else:
            self.emulator = EmulatorProcess(MASTER, ["--costs", self.costs]).start()
            self.url = self.emulator.url
        return self

    def stop(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, 15)
        if self.emulator is not None:
            self.emulator.stop()


def start_real(port: int) -> tuple[str, int]:
    """A fresh real proxy (empty database) on ``port``: (url, pid)."""
    script = REAL_LITELLM / "start.sh"
    if not script.exists():
        raise SystemExit(f"{script} not found: the real proxy is not available here")
    out = subprocess.run(["bash", str(script), str(port), MASTER], capture_output=True,
                         text=True, timeout=600)
    line = next((x for x in out.stdout.splitlines() if x.startswith("REAL_LITELLM_READY")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"start.sh failed ({out.returncode}): {out.stderr[-2000:]}")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return fields["url"], int(fields["pid"])


async def timed(call: Callable[[], Awaitable[httpx.Response]]) -> tuple[float, int]:
    """Milliseconds and status; 0 for a connection the proxy dropped (1.110.2 does,
    when an expired member_add transaction escapes as an ASGI exception)."""
    start = time.perf_counter()
    try:
        status = (await call()).status_code
    except httpx.TransportError:
        status = 0
    return (time.perf_counter() - start) * 1000.0, status


async def seed(client: httpx.AsyncClient, users: int, teams: int) -> None:
    """Teams, then their members in batches of 25, two teams at a time."""
    sem = asyncio.Semaphore(8)

    async def team(t: int) -> None:
        async with sem:
            r = await client.post("/team/new", json={"team_id": f"team-{t:04d}",
                                                     "team_alias": f"team {t}",
                                                     "metadata": {"syncd_managed": True}})
            r.raise_for_status()

    await asyncio.gather(*(team(t) for t in range(teams)))
    per_team = max(1, users // teams)
    add_sem = asyncio.Semaphore(2)

    async def fill(t: int) -> None:
        async with add_sem:
            ids = [f"user-{t * per_team + i:05d}" for i in range(per_team)]
            for i in range(0, len(ids), 25):
                body = {"team_id": f"team-{t:04d}",
                        "member": [{"user_id": u, "role": "user"} for u in ids[i:i + 25]]}
                for _ in range(5):
                    r = await client.post("/team/member_add", json=body)
                    if r.status_code == 200:
                        break
                    await asyncio.sleep(1)

    start = time.monotonic()
    await asyncio.gather(*(fill(t) for t in range(teams)))
    log(f"seeded {users} users in {teams} teams in {time.monotonic() - start:.0f} s")
    keys = asyncio.Semaphore(8)

    async def key(i: int) -> None:
        async with keys:
            await client.post("/key/generate", json={"user_id": f"user-{i:05d}",
                                                     "team_id": f"team-{i // per_team:04d}"})

    await asyncio.gather(*(key(i) for i in range(0, users, 10)))  # a key for one user in ten


async def median_ms(call: Callable[[], Awaitable[httpx.Response]], repeat: int) -> dict[str, Any]:
    times, statuses = [], []
    for _ in range(repeat):
        ms, status = await timed(call)
        times.append(ms)
        statuses.append(status)
    return {"ms": round(statistics.median(times), 1), "status": sorted(set(statuses))}


async def concurrent(client: httpx.AsyncClient, bodies: Sequence[dict[str, Any]]
                     ) -> dict[str, Any]:
    start = time.perf_counter()
    results = await asyncio.gather(
        *(timed(lambda b=b: client.post("/team/member_add", json=b)) for b in bodies)
    )
    wall = (time.perf_counter() - start) * 1000.0
    statuses: dict[int, int] = {}
    for _, status in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {"wall_ms": round(wall, 1),
            "median_ms": round(statistics.median(ms for ms, _ in results), 1),
            "statuses": statuses}


async def measure(url: str, users: int, teams: int, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {"users": users, "teams": teams, "reads": {}, "writes": {}}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=120,
                                 limits=limits) as client:
        await seed(client, users, teams)
        reads = out["reads"]
        for size in (10, 50, 100):
            reads[f"/v2/team/list page_size={size}"] = await median_ms(
                lambda s=size: client.get("/v2/team/list", params={"page": 1, "page_size": s}),
                repeat)
            reads[f"/user/list page_size={size}"] = await median_ms(
                lambda s=size: client.get("/user/list", params={"page": 1, "page_size": s}),
                repeat)
            for full in ("true", "false"):
                reads[f"/key/list size={size} return_full_object={full}"] = await median_ms(
                    lambda s=size, f=full: client.get(
                        "/key/list", params={"page": 1, "size": s, "return_full_object": f}),
                    repeat)
        reads["/team/info (10 members)"] = await median_ms(
            lambda: client.get("/team/info", params={"team_id": "team-0001"}), repeat)
        # A scoped run's row of one user (its teams and keys come with it).
        reads["/user/info (1 team, 1 key)"] = await median_ms(
            lambda: client.get("/user/info", params={"user_id": "user-00010"}), repeat)
        writes = out["writes"]
        serial = 0

        def batch(team: str, n: int) -> dict[str, Any]:
            nonlocal serial
            serial += 1
            return {"team_id": team, "member": [
                {"user_id": f"m{serial}-{i}", "role": "user"} for i in range(n)]}

        for n in (1, 10, 25, 50, 100):
            writes[f"/team/member_add {n} member(s), alone"] = await median_ms(
                lambda n=n: client.post("/team/member_add", json=batch("team-0002", n)), repeat)
        for n in (25, 100):
            for c in (4, 8):
                writes[f"/team/member_add {n} x{c} concurrent, {c} teams"] = await concurrent(
                    client, [batch(f"team-{10 + i:04d}", n) for i in range(c)])
                writes[f"/team/member_add {n} x{c} concurrent, one team"] = await concurrent(
                    client, [batch("team-0003", n) for _ in range(c)])
        writes["/team/new"] = await median_ms(
            lambda: client.post("/team/new", json={"metadata": {"syncd_managed": True}}), repeat)
        serial_user = iter(range(10**6))
        writes["/user/new"] = await median_ms(
            lambda: client.post("/user/new", json={"user_id": f"new-{next(serial_user)}",
                                                   "auto_create_key": False}), repeat)
        keys = (await client.get("/key/list", params={"page": 1, "size": 100})).json()["keys"]
        writes[f"/key/delete {min(50, len(keys))} keys"] = await median_ms(
            lambda: client.post("/key/delete", json={"keys": keys[:50]}), 1)
        race = await asyncio.gather(*(client.post("/team/new", json={"team_id": "race"})
                                      for _ in range(4)))
        out["race /team/new x4"] = [(r.status_code, r.text[:300]) for r in race]
        urace = await asyncio.gather(*(client.post("/user/new", json={
            "user_id": "race-user", "auto_create_key": False}) for _ in range(4)))
        out["race /user/new x4"] = [(r.status_code, r.text[:300]) for r in urace]
    return out


def table(doc: dict[str, Any]) -> str:
    lines = ["| request | ms (median) | status |", "| --- | --- | --- |"]
    for section in ("reads", "writes"):
        for name, row in doc[section].items():
            if "ms" in row:
                lines.append(f"| {name} | {row['ms']} | {row['status']} |")
            else:
                lines.append(f"| {name} | wall {row['wall_ms']}, median {row['median_ms']} "
                             f"| {row['statuses']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.costs", description=__doc__)
    parser.add_argument("--target", choices=("real", "emulator"), default="real")
    parser.add_argument("--costs", default="real-1.110.2", help="emulator cost profile")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--teams", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=14631)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    target = Target(args.target, args.costs, args.port).start()
    try:
        log(f"{args.target} at {target.url}")
        doc = asyncio.run(measure(target.url, args.users, args.teams, args.repeat))
    finally:
        target.stop()
    doc["target"] = args.target if args.target == "real" else f"emulator --costs {args.costs}"
    print(table(doc))
    print(json.dumps({k: v for k, v in doc.items() if k.startswith("race")}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
