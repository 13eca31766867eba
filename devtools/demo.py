"""`make demo`: a real sync against a local Keycloak and the LiteLLM emulator.

Starts Keycloak (the Maven Central distribution, cached outside the repo) with
the sample realm from config/demo-realm.json, starts the emulator, then runs
``syncd --once --dry-run``, a real ``syncd --once``, shows the resulting
teams, and runs syncd once more to show that nothing is left to change.

syncd runs on the key of a dedicated ``proxy_admin`` service user, created
through the emulator's LiteLLM API with the master key exactly as
docs/deploy.md tells operators to, not on the master key. The demo ends by
cutting access through a real route: a member's key answers on
``/chat/completions``, the member leaves their Keycloak group, the next sync
runs, and the same call is refused. Then syncd runs as a daemon, following
Keycloak's admin events (the realm records them and syncd's service account
has ``view-events``): another member leaves her group, and her key is refused
within seconds, with no full reconcile in between. The configuration it used
stays in .demo/syncd.yaml for further experiments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from devtools.keycloak_local import AdminClient, KeycloakServer, create_realm, free_port

ROOT = Path(__file__).resolve().parents[1]
MASTER_KEY = "sk-demo-master-key"
SERVICE_USER = "svc-syncd"
MEMBER, MEMBER_GROUP = "ana.dubois", "/llm/research"  # her only selected group
FAST_MEMBER, FAST_GROUP = "grace.larsen", "/llm/support"  # her only selected group
MODEL = "fake-gpt-4o-mini"  # one of the emulator's fake models


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def start_emulator(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.litellm_emulator", "--port", str(port),
         "--master-key", MASTER_KEY],
        cwd=ROOT, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/liveliness").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the LiteLLM emulator did not start within 60 s")


def master(ll_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One LiteLLM call with the master key, echoed as the curl an operator would type."""
    print(f"$ curl -X POST $LITELLM_URL{path} -H 'Authorization: Bearer $MASTER_KEY' "
          f"-d '{json.dumps(body)}'", flush=True)
    response = httpx.post(f"{ll_url}{path}", json=body,
                          headers={"Authorization": f"Bearer {MASTER_KEY}"})
    response.raise_for_status()
    reply: dict[str, Any] = response.json()
    return reply


def create_service_key(ll_url: str) -> str:
    """The one-time setup of docs/deploy.md: a proxy_admin service user and its key."""
    master(ll_url, "/user/new", {"user_id": SERVICE_USER, "user_alias": "syncd (Keycloak sync)",
                                 "user_role": "proxy_admin", "auto_create_key": False})
    reply = master(ll_url, "/key/generate", {"user_id": SERVICE_USER, "key_alias": "syncd-demo"})
    key: str = reply["key"]
    print(f"service key for {SERVICE_USER}: {key[:6]}...{key[-4:]} (syncd uses this one)")
    return key


def chat(ll_url: str, key: str, who: str) -> int:
    """``POST /chat/completions`` with ``key``, as an application would call it."""
    print(f"$ curl -X POST $LITELLM_URL/chat/completions -H 'Authorization: Bearer <{who}>' "
          f"-d '{{\"model\": \"{MODEL}\", ...}}'", flush=True)
    response = httpx.post(f"{ll_url}/chat/completions",
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    body = response.json()
    if response.status_code == 200:
        print(f"HTTP 200: {body['choices'][0]['message']['content']}")
    else:
        print(f"HTTP {response.status_code}: {body['error']['message']}")
    return response.status_code


def write_config(kc_url: str, ll_url: str, api_key: str) -> Path:
    folder = ROOT / ".demo"
    folder.mkdir(exist_ok=True)
    path = folder / "syncd.yaml"
    path.write_text(
        f"""# written by `make demo`
keycloak:
  url: {kc_url}
  realm: acme
  client_id: syncd
  client_secret: demo-secret-change-me
litellm:
  url: {ll_url}
  api_key: {api_key}  # the proxy_admin service user's key, not the master key
selection:
  path_prefixes: ["/llm"]
  attribute: litellm.sync
members:
  admin_subgroup: admins
logging:
  format: console
  level: warning
"""
    )
    return path


def syncd(config: Path, *args: str) -> int:
    cmd = [str(Path(sys.executable).with_name("syncd")), "--config", str(config), *args]
    print("$ syncd " + " ".join(args), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def show_teams(ll_url: str) -> None:
    reply = httpx.get(f"{ll_url}/v2/team/list", params={"page_size": 100},
                      headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()
    print(f"{'team_id':38} {'alias':14} {'members':>7}  settings")
    for team in sorted(reply["teams"], key=lambda t: t.get("team_alias") or ""):
        members = [m for m in team.get("members_with_roles", [])
                   if m.get("user_id") not in ("default_user_id", SERVICE_USER)]
        settings = {k: team[k] for k in ("models", "max_budget", "tpm_limit") if team.get(k)}
        print(f"{team['team_id']:38} {team.get('team_alias') or '':14} {len(members):>7}  "
              f"{json.dumps(settings)}")


def main() -> int:
    banner("starting Keycloak (first run downloads ~170 MB into the cache)")
    with KeycloakServer() as kc:
        realm = json.loads((ROOT / "config" / "demo-realm.json").read_text())
        create_realm(kc.url, realm)
        print(f"Keycloak {kc.url}, realm acme imported")
        port = free_port()
        emulator = start_emulator(port)
        ll_url = f"http://127.0.0.1:{port}"
        print(f"LiteLLM emulator {ll_url}")
        try:
            banner("one-time setup: a proxy_admin service user and key for syncd")
            config = write_config(kc.url, ll_url, create_service_key(ll_url))
            banner("dry run: the plan, nothing written")
            syncd(config, "--once", "--dry-run")
            banner("real sync")
            code = syncd(config, "--once")
            banner("teams in LiteLLM now")
            show_teams(ll_url)
            banner("second run: nothing left to change")
            again = syncd(config, "--once")
            cut = cut_access(kc, ll_url, config)
            fast = fast_path(kc, ll_url, config)
            print(f"\nconfiguration used: {config.relative_to(ROOT)}")
            return code or again or cut or fast
        finally:
            emulator.terminate()
            emulator.wait(10)


def cut_access(kc: KeycloakServer, ll_url: str, config: Path) -> int:
    """A member's key works, she leaves her group, one sync, the same call is refused."""
    with AdminClient(kc.url) as admin:
        user_id = admin.user_id("acme", MEMBER)
        group_id = admin.group_id("acme", MEMBER_GROUP)
        banner(f"{MEMBER} gets a key on her team and calls the LLM")
        key = master(ll_url, "/key/generate", {"user_id": user_id, "team_id": group_id,
                                               "key_alias": f"{MEMBER}-laptop"})["key"]
        before = chat(ll_url, key, f"{MEMBER}'s key")
        banner(f"{MEMBER} leaves {MEMBER_GROUP} in Keycloak")
        admin.request("DELETE", f"/admin/realms/acme/users/{user_id}/groups/{group_id}")
        print(f"removed {MEMBER} from {MEMBER_GROUP} (her only selected group)")
    banner("next sync")
    code = syncd(config, "--once")
    banner(f"the same call with {MEMBER}'s key")
    after = chat(ll_url, key, f"{MEMBER}'s key")
    if (before, after) != (200, 401):
        print(f"expected 200 then 401, got {before} then {after}")
        return 1
    return code


def fast_path(kc: KeycloakServer, ll_url: str, config: Path) -> int:
    """The daemon follows admin events: a removal is applied in seconds."""
    banner("syncd as a daemon, following Keycloak's admin events")
    daemon_config = config.with_name("syncd-daemon.yaml")
    port = free_port()
    settings = yaml.safe_load(config.read_text())
    settings.update(
        server={"host": "127.0.0.1", "port": port},
        # One full reconcile at start; the rest is the fast path.
        schedule={"interval_seconds": 3600},
        # The realm records admin events; the service account has view-events.
        events={"enabled": "true"},
        logging={"format": "json", "level": "info"},
    )
    daemon_config.write_text(yaml.safe_dump(settings, sort_keys=False))
    log_path = config.with_name("syncd-daemon.log")
    cmd = [str(Path(sys.executable).with_name("syncd")), "--config", str(daemon_config)]
    print("$ syncd --config " + str(daemon_config.relative_to(ROOT)), flush=True)
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            return _follow(kc, ll_url, port, daemon, log_path)
        finally:
            daemon.terminate()
            daemon.wait(30)
            print(f"daemon log: {log_path.relative_to(ROOT)}")


def _follow(
    kc: KeycloakServer, ll_url: str, port: int, daemon: subprocess.Popen[bytes], log_path: Path
) -> int:
    deadline = time.monotonic() + 60
    while True:  # ready once the first full reconcile succeeded
        if daemon.poll() is not None:
            print(f"syncd exited with {daemon.returncode}")
            return 1
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            print("syncd did not become ready within 60 s")
            return 1
        time.sleep(0.3)
    print("syncd is ready (first full reconcile done)")
    with AdminClient(kc.url) as admin:
        user_id = admin.user_id("acme", FAST_MEMBER)
        group_id = admin.group_id("acme", FAST_GROUP)
        key = master(ll_url, "/key/generate", {"user_id": user_id, "team_id": group_id,
                                               "key_alias": f"{FAST_MEMBER}-laptop"})["key"]
        before = chat(ll_url, key, f"{FAST_MEMBER}'s key")
        banner(f"{FAST_MEMBER} leaves {FAST_GROUP}; the daemon sees the admin event")
        admin.request("DELETE", f"/admin/realms/acme/users/{user_id}/groups/{group_id}")
        removed = time.monotonic()
    while time.monotonic() - removed < 30:
        status = httpx.post(f"{ll_url}/chat/completions",
                            headers={"Authorization": f"Bearer {key}"},
                            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
                            ).status_code
        if status != 200:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - removed
    after = chat(ll_url, key, f"{FAST_MEMBER}'s key")
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    full = sum(e.get("event") == "sync_finished" for e in events)
    fast = [e for e in events if e.get("event") == "fast_path_finished"]
    for run in fast:
        print(f"syncd fast path: {run['summary']}")
    print(f"refused {elapsed:.1f} s after the Keycloak change; full reconciles so far: {full} "
          f"(the one at start), fast-path runs: {len(fast)}")
    if (before, after) != (200, 401) or full != 1 or not fast:
        print(f"expected 200 then 401 through the fast path, got {before} then {after}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
