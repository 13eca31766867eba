"""Turn the chart's rendered pod into a ``podman run`` command.

Why: the image tests must run the container the way Kubernetes would run the
chart's pod, and the flags must come from ``helm template`` output rather than
be repeated in the tests, so the chart and the proof cannot drift apart. Every
field of the pod spec, the container and the security contexts is either
translated or explicitly known not to matter on one host (scheduling, service
account, image pull); an unknown field fails the test, so a new setting in the
chart is never silently left out of the proof.

The volumes are materialised from the rendered objects: the ConfigMap's data and
the chart-managed Secret's (base64-decoded) items are written to files owned by
root with the volume's ``defaultMode`` and group ``fsGroup``, as the kubelet
does, and bind-mounted at the container's ``mountPath``; a memory ``emptyDir``
becomes a tmpfs of the same size.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy.conftest import by_kind, pod_spec

# Fields that change nothing for one container on one host.
POD_IGNORED = {
    "serviceAccountName",  # syncd never talks to the Kubernetes API ...
    "enableServiceLinks",  # ... and no Service environment is injected here either
    "restartPolicy",  # podman does not restart by default (CronJob: Never)
    "imagePullSecrets", "priorityClassName", "nodeSelector", "affinity", "tolerations",
}
CONTAINER_IGNORED = {"name", "imagePullPolicy", "ports", "livenessProbe", "readinessProbe"}
SECURITY_KEYS = {
    "runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "supplementalGroups",
    "seccompProfile", "readOnlyRootFilesystem", "allowPrivilegeEscalation", "privileged",
    "capabilities",
}
POD_ONLY_SECURITY = {"fsGroup", "supplementalGroups"}
CONTAINER_ONLY_SECURITY = {
    "readOnlyRootFilesystem", "allowPrivilegeEscalation", "privileged", "capabilities",
}

_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi)?$")


def _bytes(quantity: str | int) -> int:
    m = _QUANTITY.match(str(quantity))
    assert m, f"memory quantity not understood: {quantity!r}"
    factor = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}[m.group(2)]
    return int(m.group(1)) * factor


@dataclass
class PodmanPod:
    """What ``podman run`` needs, derived from one rendered pod."""

    image: str
    options: list[str]  # podman run options, before the image
    args: list[str]  # the container's args, after the image
    uid: int
    gid: int
    grace_seconds: int | None
    probes: dict[str, tuple[str, int]] = field(default_factory=dict)  # kind -> (path, port)
    security: dict[str, Any] = field(default_factory=dict)  # the effective context

    def command(self, *extra_options: str, args: list[str] | None = None) -> list[str]:
        """``podman run`` options + image + args, for ``container_image.podman``."""
        return ["run", *self.options, *extra_options, self.image,
                *(self.args if args is None else args)]


def _object(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"the rendered chart has no {kind} {name!r}"
    return found[0]


def _write_volume(
    directory: Path, files: dict[str, bytes], mode: int, gid: int, dir_mode: int
) -> None:
    directory.mkdir(parents=True)
    for rel, content in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chown(path, 0, gid)
        path.chmod(mode)
    os.chown(directory, 0, gid)
    directory.chmod(dir_mode)


def _items(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return dict(data)
    out = {}
    for item in items:
        assert set(item) <= {"key", "path"}, item
        assert item["key"] in data, f"key {item['key']!r} is not in the object"
        out[item["path"]] = data[item["key"]]
    return out


def podman_pod(objects: list[dict[str, Any]], workdir: Path) -> PodmanPod:
    """The ``podman run`` equivalent of the rendered Deployment's or CronJob's pod.

    Networking is the host's (``--network host``): Keycloak and the emulator
    listen on loopback, and the probes reach the container's port there.
    """
    spec = pod_spec(objects)
    unknown = set(spec) - POD_IGNORED - {
        "automountServiceAccountToken", "securityContext", "terminationGracePeriodSeconds",
        "containers", "volumes",
    }
    assert not unknown, f"pod fields not translated to podman: {sorted(unknown)}"
    assert spec.get("automountServiceAccountToken") is False, "a token would be mounted"
    (container,) = spec["containers"]
    unknown = set(container) - CONTAINER_IGNORED - {
        "image", "command", "args", "env", "securityContext", "resources", "volumeMounts",
    }
    assert not unknown, f"container fields not translated to podman: {sorted(unknown)}"

    pod_sc = dict(spec.get("securityContext") or {})
    c_sc = dict(container.get("securityContext") or {})
    assert set(pod_sc) <= SECURITY_KEYS - CONTAINER_ONLY_SECURITY, sorted(pod_sc)
    assert set(c_sc) <= SECURITY_KEYS - POD_ONLY_SECURITY, sorted(c_sc)
    sc = {**pod_sc, **c_sc}  # the container's settings win, as in Kubernetes

    options = ["--rm", "--network", "host", "--pull", "never"]
    assert "runAsUser" in sc, "the chart must set a numeric user for runAsNonRoot"
    uid = int(sc["runAsUser"])
    gid = int(sc.get("runAsGroup", uid))
    if sc.get("runAsNonRoot"):
        assert uid != 0, "runAsNonRoot with runAsUser 0: Kubernetes would refuse the pod"
    options += ["--user", f"{uid}:{gid}"]
    fs_group = sc.get("fsGroup")
    groups = [*([fs_group] if fs_group is not None else []), *sc.get("supplementalGroups", [])]
    for group in groups:
        options += ["--group-add", str(group)]
    seccomp = (sc.get("seccompProfile") or {"type": "RuntimeDefault"})["type"]
    assert seccomp in ("RuntimeDefault", "Unconfined"), f"seccomp {seccomp} not translated"
    if seccomp == "Unconfined":
        options += ["--security-opt", "seccomp=unconfined"]
    # podman's default seccomp profile is the runtime default.
    if sc.get("readOnlyRootFilesystem"):
        # Kubernetes adds no writable tmpfs of its own: only the pod's volumes are.
        options += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    if sc.get("privileged"):
        options += ["--privileged"]
    caps = sc.get("capabilities") or {}
    assert set(caps) <= {"add", "drop"}, caps
    for cap in caps.get("drop", []):
        options += ["--cap-drop", cap]
    for cap in caps.get("add", []):
        options += ["--cap-add", cap]

    limits = (container.get("resources") or {}).get("limits") or {}
    assert set(limits) <= {"memory", "cpu"}, limits
    if "memory" in limits:
        options += ["--memory", str(_bytes(limits["memory"]))]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        options += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]

    for env in container.get("env") or []:
        assert set(env) == {"name", "value"}, f"env not translated: {env}"
        options += ["--env", f"{env['name']}={env['value']}"]

    # Volumes: materialise each, then mount it where the container asks.
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    sources: dict[str, tuple[str, str]] = {}  # name -> ("bind", host dir) | ("tmpfs", opts)
    for name, volume in volumes.items():
        kinds = set(volume) - {"name"}
        assert len(kinds) == 1, volume
        (kind,) = kinds
        source = volume[kind]
        target = workdir / "volumes" / name
        if kind == "configMap":
            cm = _object(objects, "ConfigMap", source["name"])
            data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
            files = _items(data, source.get("items"))
            _write_volume(target, files, int(source.get("defaultMode", 0o644)),
                          int(fs_group or 0), 0o755)
            sources[name] = ("bind", str(target))
        elif kind == "secret":
            secret = _object(objects, "Secret", source["secretName"])
            data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
            files = _items(data, source.get("items"))
            _write_volume(target, files, int(source.get("defaultMode", 0o644)),
                          int(fs_group or 0), 0o750 if fs_group is not None else 0o755)
            sources[name] = ("bind", str(target))
        elif kind == "emptyDir":
            opts = "rw,nosuid,nodev,mode=1777"
            if source.get("sizeLimit"):
                opts += f",size={_bytes(source['sizeLimit'])}"
            sources[name] = ("tmpfs", opts)
        else:
            raise AssertionError(f"volume kind {kind} not translated to podman")
    for mount in container.get("volumeMounts") or []:
        assert set(mount) <= {"name", "mountPath", "readOnly"}, mount
        how, where = sources[mount["name"]]
        if how == "tmpfs":
            assert not mount.get("readOnly"), mount
            options += ["--tmpfs", f"{mount['mountPath']}:{where}"]
        else:
            ro = ":ro" if mount.get("readOnly") else ""
            options += ["--volume", f"{where}:{mount['mountPath']}{ro}"]

    if container.get("command"):
        options += ["--entrypoint", json.dumps(container["command"])]

    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or []}
    probes = {}
    for kind in ("livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        if probe:
            http = probe["httpGet"]
            port = http["port"]
            probes[kind] = (http["path"], ports[port] if isinstance(port, str) else int(port))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None:
        options += ["--stop-timeout", str(grace)]
    return PodmanPod(
        image=container["image"], options=options, args=list(container.get("args") or []),
        uid=uid, gid=gid, grace_seconds=grace, probes=probes, security=sc,
    )
