"""The bench's moving parts: a Keycloak with the scenario imported (and cached),
the LiteLLM emulator in its own process, and syncd run as a measured subprocess.

* ``BenchKeycloak`` starts the local Keycloak (devtools/keycloak_local.py) on a
  private copy of a cached H2 database that already holds the scenario's realm.
  On a cache miss it imports the realm, measures that, stops Keycloak cleanly,
  saves the database and the id maps under ``$SYNCD_CACHE_DIR/bench/`` and
  starts again. Every bench run works on its own copy, so the cache stays
  pristine however the scenarios mutate the realm.
* ``BenchEmulator`` is ``EmulatorProcess`` (own process: its CPU does not share
  syncd's event loop or GIL) with a latency rule on every request.
* ``SyncdRunner`` runs ``syncd --once --json`` as a child process under
  bench/launch.py, which measures its wall time, CPU time and peak RSS with
  ``os.wait4`` (the rusage of exactly that child; see launch.py for why the
  bench does not measure it directly).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.scenario import CLIENT_ID, CLIENT_SECRET, GENERATOR_VERSION, REALM, Scenario
from devtools.keycloak_local import (
    DEFAULT_VERSION,
    AdminClient,
    KeycloakServer,
    cache_dir,
    ensure_distribution,
    find_java,
)
from devtools.litellm_emulator.admin import EmulatorAdmin
from devtools.litellm_emulator.server import EmulatorProcess

SYNCD = str(Path(sys.executable).with_name("syncd"))
LAUNCHER = Path(__file__).with_name("launch.py")
DB_FILE = "keycloakdb.mv.db"
MASTER_KEY = "sk-bench-master-key"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- Keycloak


@dataclass
class ImportStats:
    method: str
    seconds: float
    cached: bool


class BenchKeycloak:
    """Keycloak holding the scenario realm; `ids` maps paths and usernames to UUIDs."""

    def __init__(self, scenario: Scenario, *, import_method: str = "post",
                 use_cache: bool = True) -> None:
        self.scenario = scenario
        self.import_method = import_method
        self.use_cache = use_cache
        key = (f"{scenario.size.name}-seed{scenario.seed}-gen{GENERATOR_VERSION}"
               f"-kc{DEFAULT_VERSION}")
        self.cache = cache_dir() / "bench" / key
        self.work = Path(tempfile.mkdtemp(prefix="syncd-bench-kc-"))
        self.server: KeycloakServer | None = None
        self.group_ids: dict[str, str] = {}
        self.user_ids: dict[str, str] = {}
        self.import_stats: ImportStats | None = None
        self.startup_seconds: list[float] = []
        self.port: int | None = None
        self.management_port: int | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def admin(self) -> AdminClient:
        return AdminClient(self.url, timeout=1800)

    def start(self) -> BenchKeycloak:
        home, java = ensure_distribution(), find_java()
        db_dir = self.work / "db"
        db_dir.mkdir(parents=True, exist_ok=True)
        cached = self.cache / DB_FILE
        if self.use_cache and cached.exists() and (self.cache / "ids.json").exists():
            shutil.copy2(cached, db_dir / DB_FILE)
            ids = json.loads((self.cache / "ids.json").read_text())
            self.group_ids, self.user_ids = ids["groups"], ids["users"]
            self._boot(home, java)
            self.import_stats = ImportStats(self.import_method, 0.0, cached=True)
            log(f"keycloak up at {self.url} from cached realm {self.cache.name}")
            return self
        self._boot(home, java)
        started = time.perf_counter()
        with self.admin() as admin:
            admin.delete_realm(REALM)
            self._import(admin)
        seconds = time.perf_counter() - started
        self.import_stats = ImportStats(self.import_method, seconds, cached=False)
        log(f"imported realm ({self.import_method}) in {seconds:.1f}s")
        self._read_ids()
        if self.use_cache:
            # H2 must be closed before its file is copied: stop, save, start again.
            self.stop_server()
            self.cache.mkdir(parents=True, exist_ok=True)
            tmp = self.cache / f"{DB_FILE}.{os.getpid()}.part"
            shutil.copy2(db_dir / DB_FILE, tmp)
            os.replace(tmp, cached)
            (self.cache / "ids.json").write_text(
                json.dumps({"groups": self.group_ids, "users": self.user_ids})
            )
            self._boot(home, java)
        return self

    def _boot(self, home: Path | None = None, java: Path | None = None) -> None:
        self.server = KeycloakServer(
            self.port, management_port=self.management_port, work_dir=self.work,
            home=home, java_home=java, startup_timeout=300,
        )
        self.server.start()
        self.port, self.management_port = self.server.port, self.server.management_port
        assert self.server.startup_seconds is not None
        self.startup_seconds.append(round(self.server.startup_seconds, 1))

    def _import(self, admin: AdminClient) -> None:
        realm = self.scenario.realm()
        if self.import_method == "post":
            admin.create_realm(realm)  # one POST /admin/realms with everything
            return
        # partialImport: realm with groups and the service account first, users in chunks.
        users = realm.pop("users")
        service = [u for u in users if u.get("serviceAccountClientId")]
        people = [u for u in users if not u.get("serviceAccountClientId")]
        admin.create_realm({**realm, "users": service})
        chunk = int(self.import_method.partition(":")[2] or 1000)
        for i in range(0, len(people), chunk):
            admin.request(
                "POST", f"/admin/realms/{REALM}/partialImport",
                json_body={"ifResourceExists": "FAIL", "users": people[i: i + chunk]},
            )

    def _read_ids(self) -> None:
        with self.admin() as admin:
            self.group_ids = admin.group_ids(REALM)
            users: dict[str, str] = {}
            first = 0
            while True:
                page = admin.get(f"/admin/realms/{REALM}/users", first=first, max=1000,
                                 briefRepresentation="true")
                users.update({u["username"]: u["id"] for u in page})
                if len(page) < 1000:
                    break
                first += len(page)
            self.user_ids = users

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop(cleanup=False)
            self.server = None

    def restart(self) -> None:
        self.stop_server()
        self._boot()

    def close(self) -> None:
        self.stop_server()
        shutil.rmtree(self.work, ignore_errors=True)

    def token_requests(self) -> int:
        """Client-credentials logins of syncd's client so far (CLIENT_LOGIN events)."""
        with self.admin() as admin:
            events = admin.get(f"/admin/realms/{REALM}/events", type="CLIENT_LOGIN",
                               client=CLIENT_ID, max=100_000)
        return len(events)

    def __enter__(self) -> BenchKeycloak:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- emulator


def listing_totals(http: httpx.Client) -> dict[str, int]:
    """Rows in each LiteLLM listing syncd reads: the `total` each one reports on a
    one-row page (the emulator and the real proxy answer alike)."""
    teams = http.get("/v2/team/list", params={"page": 1, "page_size": 1}).json()
    users = http.get("/user/list", params={"page": 1, "page_size": 1}).json()
    keys = http.get("/key/list", params={"page": 1, "size": 1}).json()
    return {"teams": teams["total"], "users": users["total"], "keys": keys["total_count"]}


class BenchEmulator:
    """The LiteLLM emulator as a separate process with `latency_ms` on every request,
    and the cost model `costs` (``--costs``: "off", "real-1.110.2")."""

    counts_requests = True
    kind = "emulator"

    def __init__(self, latency_ms: float, costs: str = "off") -> None:
        self.latency_ms = latency_ms
        self.costs = costs
        self.process = EmulatorProcess(
            MASTER_KEY, ["--latency-ms", str(latency_ms), "--costs", costs]
        )
        self.admin: EmulatorAdmin | None = None

    @property
    def pid(self) -> int | None:
        proc = self.process._proc
        return proc.pid if proc is not None else None

    @property
    def url(self) -> str:
        return self.process.url

    def start(self) -> BenchEmulator:
        self.process.start()
        self.admin = EmulatorAdmin(self.url, MASTER_KEY, timeout=300)
        log(f"emulator up at {self.url} ({self.latency_ms} ms latency per request, "
            f"costs {self.costs})")
        return self

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()
        self.process.stop()

    def latency_rule(self) -> dict[str, Any]:
        return {"path": "*", "latency_ms": self.latency_ms}

    def set_faults(self, rules: list[dict[str, Any]], seed: int | None = None) -> None:
        assert self.admin is not None
        self.admin.set_faults(rules, seed=seed)

    def normal(self) -> None:
        self.set_faults([self.latency_rule()])

    @contextlib.contextmanager
    def no_latency(self) -> Iterator[EmulatorAdmin]:
        """For the bench's own seeding and checks, which are not what is measured."""
        assert self.admin is not None
        self.set_faults([])
        try:
            yield self.admin
        finally:
            self.normal()

    def counters(self) -> dict[str, Any]:
        assert self.admin is not None
        return self.admin.counters()

    def reset_counters(self) -> None:
        assert self.admin is not None
        self.admin.reset_counters()

    def totals(self) -> dict[str, int]:
        """Rows in each listing syncd reads (the `total` each one reports)."""
        assert self.admin is not None
        with self.admin.client() as http:
            return listing_totals(http)

    def __enter__(self) -> BenchEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


REAL_LITELLM = Path(os.environ.get("REAL_LITELLM_DIR", "/work/shared/real-litellm"))
# start.sh's own default run directory as root is under $PREFIX (~/.cache, in /root), which
# the `postgres` user it runs PostgreSQL as cannot enter: as root the bench gives it a run
# directory anyone can enter, with its own cluster port (a cluster keeps the port it was
# made with, so the pair goes together). Either can be set by the caller instead.
REAL_LITELLM_ROOT_ENV = {"REAL_LITELLM_RUN_DIR": "/var/tmp/rl-run",
                         "REAL_LITELLM_PG_PORT": "15452"}


class RealAdmin:
    """What the bench asks of LiteLLM besides syncd's runs, through the real API:
    keys made by people, and the whole state read back for verification."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=300,
                                 headers={"Authorization": f"Bearer {MASTER_KEY}",
                                          "litellm-changed-by": "bench"})

    def close(self) -> None:
        self.http.close()

    def client(self, **kwargs: Any) -> httpx.Client:
        """A fresh client authenticated with the master key (as ``EmulatorAdmin.client``)."""
        headers = {"Authorization": f"Bearer {MASTER_KEY}", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=str(self.http.base_url), headers=headers,
                            timeout=kwargs.pop("timeout", 10.0), **kwargs)

    def generate_key(self, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/key/generate", json=fields)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def _all(self, path: str, rows: str, size: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.http.get(path, params={"page": page, size: 100, **params}).json()
            out.extend(body[rows])
            if page >= int(body.get("total_pages") or 1):
                return out
            page += 1

    def state(self) -> dict[str, Any]:
        return {
            "teams": self._all("/v2/team/list", "teams", "page_size"),
            "users": self._all("/user/list", "users", "page_size"),
            "keys": self._all("/key/list", "keys", "size", return_full_object="true"),
        }


class BenchRealProxy:
    """A fresh real LiteLLM 1.110.2 proxy (``../shared/real-litellm/start.sh``): an
    empty database, one proxy process. It counts nothing and injects no faults, so
    the bench takes LiteLLM's request counts from syncd's own summary there."""

    counts_requests = False
    kind = "real"
    latency_ms = 0.0

    @staticmethod
    def version() -> str | None:
        """The litellm version installed in the proxy's virtualenv (start.sh's prefix)."""
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        prefix = Path(os.environ.get("REAL_LITELLM_PREFIX") or Path(cache) / "real-litellm")
        found = sorted(prefix.glob("venv/lib/python*/site-packages/litellm-*.dist-info"))
        return found[-1].name.removeprefix("litellm-").removesuffix(".dist-info") \
            if found else None

    def __init__(self, port: int = 14620) -> None:
        self.port = port
        self.url = ""
        self.pid: int | None = None
        self.admin: RealAdmin | None = None

    def start(self) -> BenchRealProxy:
        script = REAL_LITELLM / "start.sh"
        if not script.exists():
            raise SystemExit(f"{script} not found: no real LiteLLM proxy here")
        started = time.perf_counter()
        env = dict(os.environ)
        if os.geteuid() == 0:
            for name, value in REAL_LITELLM_ROOT_ENV.items():
                env.setdefault(name, value)
            run_dir = Path(env["REAL_LITELLM_RUN_DIR"])
            run_dir.mkdir(parents=True, exist_ok=True)
            if run_dir == Path(REAL_LITELLM_ROOT_ENV["REAL_LITELLM_RUN_DIR"]):
                run_dir.chmod(0o777)
        out = subprocess.run(["bash", str(script), str(self.port), MASTER_KEY],
                             capture_output=True, text=True, timeout=900, env=env)
        line = next((x for x in out.stdout.splitlines()
                     if x.startswith("REAL_LITELLM_READY")), None)
        if out.returncode != 0 or line is None:
            raise SystemExit(f"start.sh failed ({out.returncode}): {out.stderr[-2000:]}")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.url, self.pid = fields["url"], int(fields["pid"])
        self.admin = RealAdmin(self.url)
        log(f"real LiteLLM 1.110.2 up at {self.url} in {time.perf_counter() - started:.0f}s")
        return self

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 15)

    def set_faults(self, rules: list[dict[str, Any]], seed: int | None = None) -> None:
        raise RuntimeError("the real proxy injects no faults")

    def normal(self) -> None:
        pass

    @contextlib.contextmanager
    def no_latency(self) -> Iterator[RealAdmin]:
        assert self.admin is not None
        yield self.admin

    def counters(self) -> dict[str, Any]:
        return {"paths": {}, "total": {"reads": 0, "writes": 0}, "faults": {}}

    def reset_counters(self) -> None:
        pass

    def totals(self) -> dict[str, int]:
        assert self.admin is not None
        return listing_totals(self.admin.http)

    def __enter__(self) -> BenchRealProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


LiteLLMTarget = BenchEmulator | BenchRealProxy


# --------------------------------------------------------------------------- syncd


@dataclass
class SyncdRun:
    args: list[str]
    exit_code: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    doc: dict[str, Any] | None
    stdout_path: Path
    stderr_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        return (self.doc or {}).get("summary") or {}

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        with self.stderr_path.open() as handle:
            for line in handle:
                if f'"{event}"' in line:
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out


class SyncdRunner:
    """Writes syncd's configuration and runs ``syncd --once --json`` as a child process."""

    def __init__(self, workdir: Path, keycloak: BenchKeycloak, emulator: LiteLLMTarget,
                 scenario: Scenario, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 profile: str | None = None) -> None:
        self.workdir = workdir
        self.keycloak = keycloak
        self.emulator = emulator
        self.scenario = scenario
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self.profile = profile
        self.count = 0

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "keycloak": {
                "url": self.keycloak.url, "realm": REALM, "client_id": CLIENT_ID,
                "page_size": self.scenario.size.kc_page_size,
            },
            "litellm": {"url": self.emulator.url},
            "selection": {"path_prefixes": self.scenario.selection(), "attribute": None},
            # The incremental scenario is larger than the default brake (25 destructive ops);
            # the bench measures the work, the brake has its own tests.
            "safety": {"max_blocked": 100_000, "max_deleted": 100_000},
            "logging": {"format": "json", "level": "info"},
        }
        for section, values in self.overrides.items():
            config.setdefault(section, {}).update(values)
        return config

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None
              ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start syncd under the launcher; returns the launcher and the run's file stem."""
        self.count += 1
        stem = self.workdir / f"{self.count:02d}-{name}"
        cfg = stem.with_suffix(".yaml")
        cfg.write_text(yaml.safe_dump(self.config()))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
        full_env.update({
            "SYNCD_KEYCLOAK__CLIENT_SECRET": CLIENT_SECRET,
            "SYNCD_LITELLM__API_KEY": MASTER_KEY,
        })
        full_env.update(env or {})
        command = [*self.wrapper(stem), "--config", str(cfg), "--once", "--json", *args]
        with stem.with_suffix(".json").open("wb") as stdout, \
                stem.with_suffix(".log").open("wb") as stderr:
            proc = subprocess.Popen(
                measured(stem.with_suffix(".rusage"), command),
                stdout=stdout, stderr=stderr, env=full_env, stdin=subprocess.DEVNULL,
            )
        return proc, stem

    def wrapper(self, stem: Path) -> list[str]:
        """The syncd command, or syncd under a profiler (``profile``)."""
        if self.profile == "cprofile":
            return [sys.executable, "-m", "cProfile", "-o", str(stem.with_suffix(".prof")),
                    "-m", "syncd.cli"]
        if self.profile == "pyinstrument":
            return [sys.executable, "-m", "pyinstrument",
                    "-r", "text", "-o", str(stem.with_suffix(".pyinstrument.txt")),
                    "-m", "syncd.cli"]
        return [SYNCD]

    @staticmethod
    def wait(proc: subprocess.Popen[bytes], stem: Path, args: list[str]) -> SyncdRun:
        proc.wait()
        usage = json.loads(stem.with_suffix(".rusage").read_text())
        out = stem.with_suffix(".json")
        doc = None
        with contextlib.suppress(ValueError):
            doc = json.loads(out.read_text())
        return SyncdRun(
            args=args, exit_code=usage["exit_code"], wall_seconds=usage["wall_seconds"],
            cpu_seconds=usage["cpu_seconds"],
            peak_rss_mb=usage["peak_rss_kib"] / 1024,  # Linux reports KiB
            doc=doc, stdout_path=out, stderr_path=stem.with_suffix(".log"),
        )

    def run(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> SyncdRun:
        proc, stem = self.start(name, *args, env=env)
        return self.wait(proc, stem, list(args))


def measured(result: Path, command: list[str]) -> list[str]:
    """`command` run under bench/launch.py, which writes its rusage to `result`."""
    return [sys.executable, "-I", "-S", str(LAUNCHER), str(result), "--", *command]


def baseline_rss_mb() -> float:
    """Peak RSS of `syncd validate` on a trivial config: the interpreter and imports."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "syncd.yaml"
        cfg.write_text(yaml.safe_dump({
            "keycloak": {"url": "http://127.0.0.1:1", "realm": "r", "client_id": "c",
                         "client_secret": "s"},
            "litellm": {"url": "http://127.0.0.1:1", "api_key": "k"},
        }))
        result = Path(tmp) / "rusage.json"
        subprocess.run(measured(result, [SYNCD, "validate", "--config", str(cfg)]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return float(json.loads(result.read_text())["peak_rss_kib"]) / 1024


# --------------------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # after "pid (comm) "


def process_cpu_seconds(pid: int | None, *, group: bool = False) -> float:
    """utime+stime of `pid` (with `group`, of every process in its process group)."""
    if pid is None:
        return 0.0
    if not group:
        fields = _stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[2]) == pid:  # field 5: pgrp
                total += int(fields[11]) + int(fields[12])
    return total / _TICK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat, minus idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / _TICK


class CpuMeter:
    """CPU used by Keycloak, the emulator and the whole machine between start and stop."""

    def __init__(self, keycloak: BenchKeycloak, emulator: LiteLLMTarget) -> None:
        self.keycloak = keycloak
        self.emulator = emulator
        self.start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        kc = self.keycloak.server.pid if self.keycloak.server is not None else None
        return {
            "keycloak": process_cpu_seconds(kc, group=True),
            "emulator": process_cpu_seconds(self.emulator.pid),
            "bench": process_cpu_seconds(os.getpid()),
            "machine": machine_busy_seconds(),
            "wall": time.perf_counter(),
        }

    def begin(self) -> None:
        self.start = self._read()

    def end(self) -> dict[str, float]:
        now = self._read()
        return {k: round(now[k] - self.start[k], 2) for k in now}


# --------------------------------------------------------------------------- connections


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    out.add(link[8:-1])
    except OSError:
        pass
    return out


def _tcp_table() -> dict[str, tuple[int, int]]:
    """inode -> (local port, remote port) for every TCP socket on the machine."""
    table = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as handle:
            next(handle)
            for line in handle:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], parts[9]
                table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return table


class ConnectionSampler:
    """Counts the distinct TCP connections syncd opens to each server during a run.

    A thread lists syncd's sockets (/proc/<pid>/fd) every `interval` seconds; each
    new socket is looked up once in /proc/net/tcp to see which server it talks to
    (that table costs ~10 ms of CPU to read here, so it is read only for new
    sockets, not on every sample). With keep-alive, syncd should open about
    `concurrency` connections per API (plus one for the token), however many
    requests it makes.
    """

    def __init__(self, launcher_pid: int, ports: Mapping[str, int], interval: float = 0.01
                 ) -> None:
        self.launcher_pid = launcher_pid
        self.ports = dict(ports)
        self.interval = interval
        self.seen: dict[str, set[str]] = {name: set() for name in ports}
        self.known: set[str] = set()  # classified, or not TCP (asyncio's socketpair)
        self.tries: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        by_port = {port: name for name, port in self.ports.items()}
        while not self._stop.is_set():
            for pid in _children(self.launcher_pid):
                new = _socket_inodes(pid) - self.known
                if not new:
                    continue
                table = _tcp_table()
                for inode in new:
                    remote = table.get(inode, (0, 0))[1]
                    self.tries[inode] = self.tries.get(inode, 0) + 1
                    if remote or self.tries[inode] >= 3:  # connected, or not a TCP socket
                        self.known.add(inode)
                    if remote in by_port:
                        self.seen[by_port[remote]].add(inode)
            self._stop.wait(self.interval)

    def counts(self) -> dict[str, int]:
        return {name: len(inodes) for name, inodes in self.seen.items()}
