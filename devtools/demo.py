"""`make demo`: a real sync against a local Keycloak and the LiteLLM emulator.

Starts Keycloak (the Maven Central distribution, cached outside the repo) with
the sample realm from config/demo-realm.json, starts the emulator, then runs
``syncd --once --dry-run``, a real ``syncd --once``, shows the resulting
teams, and runs syncd once more to show that nothing is left to change. The
configuration it used stays in .demo/syncd.yaml for further experiments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devtools.keycloak_local import KeycloakServer, create_realm, free_port

ROOT = Path(__file__).resolve().parents[1]
MASTER_KEY = "sk-demo-master-key"


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


def write_config(kc_url: str, ll_url: str) -> Path:
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
  api_key: {MASTER_KEY}
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
        members = [m for m in team.get("members_with_roles", []) if m.get("user_id") !=
                   "default_user_id"]
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
            config = write_config(kc.url, ll_url)
            banner("dry run: the plan, nothing written")
            syncd(config, "--once", "--dry-run")
            banner("real sync")
            code = syncd(config, "--once")
            banner("teams in LiteLLM now")
            show_teams(ll_url)
            banner("second run: nothing left to change")
            again = syncd(config, "--once")
            print(f"\nconfiguration used: {config.relative_to(ROOT)}")
            return code or again
        finally:
            emulator.terminate()
            emulator.wait(10)


if __name__ == "__main__":
    sys.exit(main())
