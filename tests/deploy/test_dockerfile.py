"""Dockerfile checks without a Docker engine: hadolint, and a parse of the
instructions against what the image must do (pinned slim base, multi-stage,
the README's constraints install, non-root numeric user, read-only friendly,
entrypoint and port), plus the .dockerignore keeping the context small."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.deploy.conftest import CHART, EXAMPLE_CONFIG, REPO, cache_bin

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Instruction:
    cmd: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit inside a continued instruction too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        cmd, _, args = current.partition(" ")
        instructions.append(Instruction(cmd.upper(), args.strip()))
        current = ""
    assert not current, "dangling line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    args = {}
    for ins in instructions:
        if ins.cmd == "FROM":
            break
        if ins.cmd == "ARG" and "=" in ins.args:
            k, v = ins.args.split("=", 1)
            args[k] = v
    return args


def from_image(ins: Instruction, args: dict[str, str]) -> tuple[str, str | None]:
    parts = ins.args.split()
    image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], parts[0])
    alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
    return image, alias


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
STAGES = stages(INSTRUCTIONS)
FINAL = STAGES[-1]


def test_hadolint(hadolint: str) -> None:
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_from_a_pinned_slim_python() -> None:
    args = global_args(INSTRUCTIONS)
    assert len(STAGES) >= 2, "build and runtime stages"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in requires.removeprefix(">=").split("."))
    for stage in STAGES:
        image, _ = from_image(stage[0], args)
        m = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
        assert m, f"base image not pinned to an exact slim Python: {image}"
        assert (int(m.group(1)), int(m.group(2))) >= minimum
    # Both stages use the same base, so the venv's interpreter path is valid.
    assert len({from_image(s[0], args)[0] for s in STAGES}) == 1


def test_installs_the_package_like_the_readme_without_dev_extras() -> None:
    build = STAGES[0]
    runs = " ".join(i.args for i in build if i.cmd == "RUN")
    m = re.search(r"pip install[^&;]*?-c constraints\.txt (\S+)", runs)
    assert m, runs
    assert m.group(1) == ".", "install the repository itself, no extras (no [dev])"
    assert "[dev]" not in runs and "-e " not in runs
    copied = " ".join(i.args for i in build if i.cmd == "COPY")
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "syncd"):
        assert needed in copied
    # The runtime stage takes the finished venv from the build stage.
    _, build_alias = from_image(build[0], global_args(INSTRUCTIONS))
    assert any(
        i.cmd == "COPY" and i.args.startswith(f"--from={build_alias} ") for i in FINAL
    )
    assert not any(i.cmd == "ADD" for i in INSTRUCTIONS), "COPY, not ADD"


def test_runtime_runs_as_a_numeric_non_root_user_matching_the_chart() -> None:
    users = [i.args for i in FINAL if i.cmd == "USER"]
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or gid.isdigit()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["securityContext"]["runAsUser"] == int(uid)
    if gid:
        assert values["securityContext"]["runAsGroup"] == int(gid)


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.cmd == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", ins.args):
                env[k] = v
    return env


def test_read_only_root_filesystem_friendly() -> None:
    env = _env(FINAL)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    # Nothing after USER writes into the image, and no VOLUME needs a writable path.
    assert not any(i.cmd == "VOLUME" for i in FINAL)
    after_user = FINAL[[i.cmd for i in FINAL].index("USER") :]
    assert not any(i.cmd == "RUN" for i in after_user)


def test_entrypoint_port_and_default_command() -> None:
    entrypoint = [json.loads(i.args) for i in FINAL if i.cmd == "ENTRYPOINT"]
    assert entrypoint == [["syncd"]], "exec form, so signals reach syncd"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "syncd" in scripts
    cmd = [json.loads(i.args) for i in FINAL if i.cmd == "CMD"]
    assert cmd == [["--config", "/etc/syncd/syncd.yaml"]]  # where the chart mounts it
    exposed = [i.args for i in FINAL if i.cmd == "EXPOSE"]
    port = yaml.safe_load(EXAMPLE_CONFIG.read_text())["server"]["port"]
    assert exposed == [str(port)] == ["9108"]


# --- .dockerignore ---------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches a
    path below what it matches (a directory)."""
    result = False
    parts = path.split("/")
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        rx = _pattern_regex(pattern)
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(rx.fullmatch(p) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    needed = ["pyproject.toml", "constraints.txt", "README.md", "syncd/__init__.py",
              "syncd/metrics.py"]
    for path in needed:
        assert not excluded(path, patterns), path
    unwanted = [".venv/bin/python", ".git/HEAD", "tests/deploy/conftest.py", "Dockerfile",
                "helm/syncd/values.yaml", ".demo/syncd.yaml",
                "syncd/__pycache__/config.cpython-311.pyc"]
    for path in unwanted:
        assert excluded(path, patterns), path
    # Every file the build copies is in the repository.
    for path in ("pyproject.toml", "constraints.txt", "README.md", "syncd/__init__.py"):
        assert (REPO / path).is_file(), path


def test_install_tools_script_is_valid_bash() -> None:
    script = REPO / "devtools" / "install_tools.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        ["bash", str(script), "--print-bin"], capture_output=True, text=True, check=True
    )
    assert Path(proc.stdout.strip()) == cache_bin()
