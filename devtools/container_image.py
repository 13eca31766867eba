"""Build and run syncd's container image with Debian's podman and buildah.

Why this exists: the image the Helm chart runs must be built and run by the
test suite, but these machines have no Docker engine and reach no container
registry (``python:3.11.x-slim-bookworm`` cannot be pulled). So:

* ``ensure_base`` builds a stand-in for the official Python image from Debian 12
  packages (``debootstrap --variant=minbase`` with ``python3``, ``python3-venv``
  and ``ca-certificates``; Debian 12's Python is 3.11, like the official image's)
  plus a ``python`` -> ``python3`` link, caches it as a tarball under
  ``$SYNCD_CACHE_DIR/container-base/`` (later runs skip debootstrap) and imports
  it with ``podman import``. What it differs in: docs/deploy.md.
* ``build`` builds the repository's Dockerfile, unmodified, with only
  ``PYTHON_IMAGE`` set, using ``buildah bud --isolation chroot`` (RUN steps need
  no OCI runtime). The build's pip has to reach the package index the way the
  host's pip does: the host's CA bundle and its pip settings (files and ``PIP_*``
  variables, merged into one pip.conf) are bind-mounted into the RUN steps only,
  so none of the host's configuration ends up in a layer of the image.
* ``podman`` runs podman with ``devtools/containers.conf`` (runc, cgroupfs, no
  default ulimits: what works on these hosts), without touching the machine's
  own /etc/containers.

Stdlib only: devtools/install_tools.sh runs it with the system python3.

CLI::

    python3 -m devtools.container_image check        # can podman build and run here?
    python3 -m devtools.container_image base         # the stand-in base (cached)
    python3 -m devtools.container_image build [--tag localhost/syncd:dev]
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.locks import file_lock

__all__ = [
    "BASE_TAG",
    "CONTAINERS_CONF",
    "DOCKERFILE",
    "REPO",
    "BuildResult",
    "ContainerToolsError",
    "build",
    "engine_env",
    "ensure_base",
    "image_size",
    "podman",
    "remove_image",
    "unavailable_reason",
]

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
CONTAINERS_CONF = REPO / "devtools" / "containers.conf"

# What the stand-in base is made of. Changing any of it makes a new cache entry
# (the hash is in the tarball's name and the image's label).
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
RECIPE_VERSION = 2  # bump when the post-debootstrap steps below change
BASE_REPOSITORY = "localhost/syncd-python-standin"
BASE_LABEL = "io.syncd.standin.recipe"

# Where the host CA bundle is mounted during the build (it is Debian's path,
# so pip, OpenSSL and certifi-less tools in the stand-in all find it).
BUILD_CA_PATH = "/etc/ssl/certs/ca-certificates.crt"
# Where the host's pip settings are mounted during the build: an empty file in
# the stand-in base, so the mount leaves nothing behind in the image.
BUILD_PIP_CONF = "/etc/pip.conf"
# pip options whose values may be local paths, which the build cannot see: a
# local wheel directory or client certificate is dropped (a mount point of its
# own would be left in the image's layer); URLs are kept.
PATH_OPTIONS = ("find-links", "client-cert", "constraint", "requirement")


class ContainerToolsError(RuntimeError):
    """podman, buildah or debootstrap failed; the message carries their output."""


def _log(message: str) -> None:
    print(f"container_image: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("SYNCD_CACHE_DIR") or str(Path.home() / ".cache" / "syncd")
    return Path(base) / "container-base"


def _recipe() -> dict[str, object]:
    return {"suite": SUITE, "variant": VARIANT, "packages": list(PACKAGES),
            "version": RECIPE_VERSION}


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(_recipe(), sort_keys=True).encode()).hexdigest()[:12]


BASE_TAG = f"{BASE_REPOSITORY}:3.11-{SUITE}-{recipe_hash()}"


# --- running the tools --------------------------------------------------------


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for podman and buildah: our containers.conf only."""
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    env.update(extra or {})
    return env


def _run(
    cmd: Sequence[str], *, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(cmd), env=engine_env(), text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
    except FileNotFoundError as exc:
        raise ContainerToolsError(f"{cmd[0]} is not installed (devtools/install_tools.sh)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ContainerToolsError(f"{' '.join(cmd[:3])} ... timed out after {timeout}s") from exc
    if check and proc.returncode != 0:
        raise ContainerToolsError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{(proc.stdout or '')[-3000:]}"
            f"{(proc.stderr or '')[-3000:]}"
        )
    return proc


def podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` with our containers.conf; output captured as text."""
    return _run(["podman", *args], timeout=timeout, check=check)


def unavailable_reason() -> str | None:
    """Why podman cannot build and run the image on this machine, or None."""
    for tool in ("podman", "buildah", "runc"):
        if not shutil.which(tool):
            return f"{tool} is not installed (devtools/install_tools.sh installs it as root)"
    if os.geteuid() != 0:
        return ("podman runs here as root only (devtools/containers.conf); rootless "
                "podman is not set up")
    proc = _run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], check=False,
                timeout=60)
    if proc.returncode != 0:
        return f"podman info failed: {(proc.stderr or proc.stdout).strip()[-500:]}"
    return None


def image_exists(ref: str) -> bool:
    return _run(["podman", "image", "exists", ref], check=False, timeout=60).returncode == 0


def image_size(ref: str) -> int:
    """Bytes of the image's uncompressed layers, base included."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def remove_image(ref: str) -> None:
    podman("rmi", "--force", ref, check=False, timeout=120)


# --- the stand-in base --------------------------------------------------------


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    sources = Path("/etc/apt")
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or not path.name.endswith((".list", ".sources")):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (m.group(1).lower(), m.group(2).strip())
                    for m in re.finditer(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.MULTILINE)
                )
                if "deb" in fields.get("types", "").split() and SUITE in fields.get(
                    "suites", ""
                ).split():
                    return str(fields["uris"].split()[0])
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                    return parts[1]
    return "http://deb.debian.org/debian"


def _debootstrap(tarball: Path) -> None:
    if not shutil.which("debootstrap"):
        raise ContainerToolsError("debootstrap is not installed (devtools/install_tools.sh)")
    mirror = apt_mirror()
    start = time.monotonic()
    _log(f"debootstrap {SUITE} ({VARIANT}, {', '.join(PACKAGES)}) from {mirror} ...")
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix=".rootfs-") as tmp:
        root = Path(tmp) / "root"
        _run(["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}",
              SUITE, str(root), mirror], timeout=1800)
        # The official image has `python`; the Dockerfile calls it.
        (root / "usr/bin/python").symlink_to("python3")
        # The mount point of the build's pip settings (build_mounts): made here,
        # empty, so that buildah does not leave one behind in the image's layer.
        (root / BUILD_PIP_CONF.lstrip("/")).touch()
        # Nothing of the host in the base: debootstrap copies its resolver and
        # hosts files (podman mounts its own at run time); no package caches.
        for name in ("etc/resolv.conf", "etc/hosts", "etc/hostname"):
            target = root / name
            if target.exists() or target.is_symlink():
                target.unlink()
                target.touch()
        for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                        "var/lib/apt/lists/*_*", "var/log/*.log", "var/log/apt/*"):
            for path in root.glob(pattern):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial),
              "."], timeout=600)
        partial.rename(tarball)
    _log(f"stand-in base cached in {time.monotonic() - start:.0f}s: {tarball}")


def ensure_base() -> str:
    """The stand-in base image's tag: imported already, or from the cached tarball,
    or debootstrapped once and cached (file lock: concurrent sessions wait)."""
    if image_exists(BASE_TAG):
        return BASE_TAG
    cache = cache_dir()
    tarball = cache / f"python3.11-{SUITE}-{VARIANT}-{recipe_hash()}.tar"
    with file_lock(cache / ".lock"):
        if image_exists(BASE_TAG):
            return BASE_TAG
        if not tarball.is_file():
            _debootstrap(tarball)
        changes = [
            'CMD ["python3"]',
            "ENV LANG=C.UTF-8",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"LABEL {BASE_LABEL}={recipe_hash()}",
            "LABEL org.opencontainers.image.description=stand-in for python:3.11-slim-bookworm"
            " built by devtools/container_image.py",
        ]
        args = ["import", "--quiet"]
        for change in changes:
            args += ["--change", change]
        podman(*args, str(tarball), BASE_TAG, timeout=600)
        _log(f"imported {BASE_TAG} from {tarball}")
    return BASE_TAG


# --- the build ----------------------------------------------------------------


def _host_pip_config() -> configparser.ConfigParser:
    """The host pip's settings as pip merges them: global, user and PIP_CONFIG_FILE
    files in that order, then PIP_* variables (which win), as one pip.conf."""
    config = configparser.ConfigParser(interpolation=None)
    home = Path.home()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files = [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf"),
             home / ".pip" / "pip.conf", xdg / "pip" / "pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    for path in files:
        if path.is_file():
            config.read(path, encoding="utf-8")
    if not config.has_section("global"):
        config.add_section("global")
    for key, value in os.environ.items():
        if key.startswith("PIP_") and key != "PIP_CONFIG_FILE":
            config.set("global", key[4:].lower().replace("_", "-"), value)
    return config


def _ca_bundle(config: configparser.ConfigParser) -> Path:
    for candidate in (
        config.get("global", "cert", fallback=None),
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("REQUESTS_CA_BUNDLE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ContainerToolsError("no CA bundle found on the host for the build's pip")


def build_mounts(workdir: Path) -> list[str]:
    """``-v`` options giving the build's RUN steps the host's CA bundle and pip
    settings, read-only. Both are mounted over files the stand-in base already
    has, so nothing of them is written into a layer of the image."""
    config = _host_pip_config()
    mounts = [f"{_ca_bundle(config)}:{BUILD_CA_PATH}:ro"]
    for section in config.sections():
        for option in list(config.options(section)):
            if option in PATH_OPTIONS:
                urls = [v for v in config.get(section, option).split() if "://" in v]
                if urls:
                    config.set(section, option, " ".join(urls))
                else:
                    config.remove_option(section, option)
    config.set("global", "cert", BUILD_CA_PATH)
    pip_conf = workdir / "pip.conf"
    with pip_conf.open("w", encoding="utf-8") as handle:
        config.write(handle)
    mounts.append(f"{pip_conf}:{BUILD_PIP_CONF}:ro")
    return [arg for mount in mounts for arg in ("-v", mount)]


@dataclass(frozen=True)
class BuildResult:
    tag: str
    base: str
    seconds: float
    image_bytes: int
    base_bytes: int
    log: str = field(repr=False)

    @property
    def added_bytes(self) -> int:
        """What syncd adds to the base image."""
        return self.image_bytes - self.base_bytes


def build_command(tag: str, base: str, mounts: Sequence[str]) -> list[str]:
    """The build: the repository's Dockerfile as it is, only PYTHON_IMAGE set."""
    return ["buildah", "bud", "--isolation", "chroot", "--pull=false",
            "--file", str(DOCKERFILE), "--build-arg", f"PYTHON_IMAGE={base}",
            *mounts, "--tag", tag, str(REPO)]


def build(tag: str, base: str | None = None) -> BuildResult:
    """Build the image (no layer cache: every build runs every step)."""
    base = base or ensure_base()
    with tempfile.TemporaryDirectory(prefix="syncd-build-") as tmp:
        cmd = build_command(tag, base, build_mounts(Path(tmp)))
        start = time.monotonic()
        proc = _run(cmd, timeout=1200)
        seconds = time.monotonic() - start
    return BuildResult(tag=tag, base=base, seconds=seconds, image_bytes=image_size(tag),
                       base_bytes=image_size(base), log=proc.stdout + proc.stderr)


# --- CLI ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m devtools.container_image")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="say whether podman can build and run the image here")
    sub.add_parser("base", help="make sure the stand-in base image is there (cached)")
    p_build = sub.add_parser("build", help="build the repository's Dockerfile on the stand-in")
    p_build.add_argument("--tag", default="localhost/syncd:dev")
    args = parser.parse_args(argv)
    try:
        reason = unavailable_reason()
        if reason:
            print(f"container_image: cannot run podman here: {reason}", file=sys.stderr)
            return 1
        if args.command == "check":
            print("container_image: podman, buildah and runc work here")
        elif args.command == "base":
            print(ensure_base())
        else:
            result = build(args.tag)
            mib = 1024 * 1024
            print(f"built {result.tag} on {result.base} in {result.seconds:.0f}s: "
                  f"{result.image_bytes / mib:.1f} MiB, of which syncd adds "
                  f"{result.added_bytes / mib:.1f} MiB")
    except ContainerToolsError as exc:
        print(f"container_image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
