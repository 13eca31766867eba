"""helm/syncd: lint, render both modes with and without the optional parts, and
check the rendered objects (hardening, probes, single writer, secrets, config)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import load_settings
from tests.deploy.conftest import (
    ALL_ON,
    CHART,
    CRONJOB,
    DASHBOARD_FILE,
    DEPLOYMENT,
    EXAMPLE_CONFIG,
    SECRET_VALUES,
    by_kind,
    config_map,
    one,
    pod_spec,
    pod_template_metadata,
    render,
    render_error,
    run_helm,
)

CASES: dict[str, tuple[Path, ...]] = {
    "deployment": (DEPLOYMENT,),
    "cronjob": (CRONJOB,),
    "deployment-all-on": (DEPLOYMENT, ALL_ON),
    "cronjob-all-on": (CRONJOB, ALL_ON),
}
# Chart-managed Secret in CronJob mode too (ci/cronjob-values.yaml uses an existing one).
CHART_SECRET = (
    "secrets.existingSecret=",
    f"secrets.keycloakClientSecret={SECRET_VALUES[0]}",
    f"secrets.litellmApiKey={SECRET_VALUES[1]}",
)

EXPECTED_KINDS = {
    "deployment": {"ServiceAccount", "Secret", "ConfigMap", "Deployment"},
    "cronjob": {"ServiceAccount", "ConfigMap", "CronJob"},
    "deployment-all-on": {
        "ServiceAccount", "Secret", "ConfigMap", "Deployment", "Service", "ServiceMonitor",
        "PrometheusRule", "NetworkPolicy",
    },
    "cronjob-all-on": {"ServiceAccount", "ConfigMap", "CronJob", "PrometheusRule", "NetworkPolicy"},
}


# --- lint and render ----------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_helm_lint(helm: str, case: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for v in CASES[case]:
        args += ["-f", str(v)]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("case", CASES)
def test_renders_the_expected_objects(helm: str, case: str) -> None:
    objects = render(helm, *CASES[case])
    assert {o["kind"] for o in objects} == EXPECTED_KINDS[case]
    if case.endswith("all-on"):
        dashboards = [o for o in by_kind(objects, "ConfigMap") if "syncd.json" in o["data"]]
        assert len(dashboards) == 1
    # Never both workloads, never more than one of either.
    assert len(by_kind(objects, "Deployment")) + len(by_kind(objects, "CronJob")) == 1


@pytest.mark.parametrize("case", CASES)
def test_standard_labels_and_namespace(helm: str, case: str) -> None:
    for obj in render(helm, *CASES[case], namespace="ops"):
        meta = obj["metadata"]
        labels = meta["labels"]
        assert meta["namespace"] == "ops", obj["kind"]
        assert labels["app.kubernetes.io/name"] == "syncd"
        assert labels["app.kubernetes.io/instance"] == "syncd"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "syncd-0.1.0"


def test_values_yaml_renders_only_with_required_settings(helm: str) -> None:
    assert "is required" in render_error(helm)
    err = render_error(helm, sets=("secrets.existingSecret=creds",))
    assert "config.keycloak.url is required" in err


def test_fullname_follows_release_and_cronjob_names_fit(helm: str) -> None:
    objects = render(helm, CRONJOB, release="a" * 53)  # helm's longest release name
    cronjob = one(objects, "CronJob")
    # Kubernetes caps CronJob names at 52: its Jobs append "-<minutes>" (11 characters).
    assert len(cronjob["metadata"]["name"]) <= 52
    objects = render(helm, DEPLOYMENT, release="prod")
    assert one(objects, "Deployment")["metadata"]["name"] == "prod-syncd"


# --- the pod: hardening ---------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_pod_is_hardened(helm: str, case: str) -> None:
    objects = render(helm, *CASES[case])
    spec = pod_spec(objects)
    assert spec["automountServiceAccountToken"] is False
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("privileged", False) is False
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    assert container["image"] == "syncd:0.1.0"


@pytest.mark.parametrize("case", CASES)
def test_service_account_token_not_automounted(helm: str, case: str) -> None:
    objects = render(helm, *CASES[case])
    sa = one(objects, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert pod_spec(objects)["serviceAccountName"] == sa["metadata"]["name"]


@pytest.mark.parametrize("case", CASES)
def test_config_and_secrets_mounted_read_only(helm: str, case: str) -> None:
    objects = render(helm, *CASES[case])
    spec = pod_spec(objects)
    (container,) = spec["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["config"]["readOnly"] is True
    assert mounts["config"]["mountPath"] == "/etc/syncd"
    assert mounts["secrets"]["readOnly"] is True
    assert mounts["secrets"]["mountPath"] == "/var/run/secrets/syncd"
    secret = volumes["secrets"]["secret"]
    assert secret["defaultMode"] == 0o440  # group-readable by fsGroup, nothing else
    assert {i["path"] for i in secret["items"]} == {"keycloak-client-secret", "litellm-api-key"}
    # Only the scratch /tmp is writable, and it is memory-backed and small.
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    assert volumes["tmp"]["emptyDir"]["medium"] == "Memory"
    assert volumes["config"]["configMap"]["name"] == config_map(objects)["metadata"]["name"]


def test_existing_secret_is_used_with_its_key_names(helm: str) -> None:
    objects = render(
        helm,
        DEPLOYMENT,
        sets=(
            "secrets.existingSecret=creds",
            "secrets.existingSecretKeys.keycloakClientSecret=kc",
            "secrets.existingSecretKeys.litellmApiKey=ll",
        ),
    )
    assert not by_kind(objects, "Secret")
    secret = next(v for v in pod_spec(objects)["volumes"] if v["name"] == "secrets")["secret"]
    assert secret["secretName"] == "creds"
    assert {(i["key"], i["path"]) for i in secret["items"]} == {
        ("kc", "keycloak-client-secret"),
        ("ll", "litellm-api-key"),
    }
    assert "checksum/secret" not in pod_template_metadata(objects)["annotations"]


def test_chart_secret_holds_the_values(helm: str) -> None:
    secret = one(render(helm, DEPLOYMENT), "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "keycloak-client-secret": SECRET_VALUES[0],
        "litellm-api-key": SECRET_VALUES[1],
    }


def test_missing_secret_values_fail(helm: str) -> None:
    err = render_error(helm, DEPLOYMENT, sets=("secrets.litellmApiKey=",))
    assert "secrets.litellmApiKey is required" in err


# --- Deployment -----------------------------------------------------------------


@pytest.mark.parametrize("case", ["deployment", "deployment-all-on"])
def test_deployment_single_writer_with_probes(helm: str, case: str) -> None:
    objects = render(helm, *CASES[case])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = pod_spec(objects)["containers"]
    assert container["args"] == ["--config", "/etc/syncd/syncd.yaml"]
    (port,) = container["ports"]
    assert port == {"name": "http-metrics", "containerPort": 9108, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    # SIGTERM lets the run in flight finish (schedule.shutdown_timeout_seconds: 60).
    assert pod_spec(objects)["terminationGracePeriodSeconds"] > 60


def test_probe_port_follows_server_port(helm: str) -> None:
    objects = render(helm, DEPLOYMENT, ALL_ON, sets=("config.server.port=9200",))
    (container,) = pod_spec(objects)["containers"]
    assert container["ports"][0]["containerPort"] == 9200
    assert one(objects, "Service")["spec"]["ports"][0]["targetPort"] == "http-metrics"


def test_grace_period_shorter_than_shutdown_timeout_fails(helm: str) -> None:
    err = render_error(helm, DEPLOYMENT, sets=("terminationGracePeriodSeconds=30",))
    assert "terminationGracePeriodSeconds" in err


def test_config_checksum_rolls_the_pods_on_config_changes_only(helm: str) -> None:
    def checksum(*sets: str) -> str:
        meta = pod_template_metadata(render(helm, DEPLOYMENT, sets=sets))
        return str(meta["annotations"]["checksum/config"])

    base = checksum()
    cm = config_map(render(helm, DEPLOYMENT))["data"]["syncd.yaml"]
    assert base == hashlib.sha256(cm.rstrip("\n").encode()).hexdigest()
    assert checksum("config.safety.max_blocked=5") != base
    assert checksum("resources.requests.cpu=100m") == base


def test_secret_checksum_changes_with_the_secret(helm: str) -> None:
    def checksum(*sets: str) -> str:
        meta = pod_template_metadata(render(helm, DEPLOYMENT, sets=sets))
        return str(meta["annotations"]["checksum/secret"])

    assert checksum() != checksum("secrets.litellmApiKey=rotated")


# --- CronJob --------------------------------------------------------------------


@pytest.mark.parametrize("case", ["cronjob", "cronjob-all-on"])
def test_cronjob_runs_once_forbids_overlap_and_pushes_metrics(helm: str, case: str) -> None:
    objects = render(helm, *CASES[case])
    cronjob = one(objects, "CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["schedule"] == "*/15 * * * *"
    job = spec["jobTemplate"]["spec"]
    assert isinstance(job["backoffLimit"], int) and job["backoffLimit"] >= 0
    assert job["activeDeadlineSeconds"] > 0
    fail_rule = next(r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob")
    assert fail_rule["onExitCodes"]["values"] == [3, 7, 8, 9]
    pod = pod_spec(objects)
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["args"] == ["--once", "--config", "/etc/syncd/syncd.yaml", "--push-metrics"]
    assert "livenessProbe" not in container and "ports" not in container
    config = yaml.safe_load(config_map(objects)["data"]["syncd.yaml"])
    assert config["pushgateway"]["url"] == "http://prometheus-pushgateway.monitoring.svc:9091"
    assert config["pushgateway"]["job"] == "syncd"


def test_cronjob_without_pushgateway_url_fails(helm: str) -> None:
    err = render_error(helm, CRONJOB, sets=("config.pushgateway.url=null",))
    assert "config.pushgateway.url" in err


def test_cronjob_without_push_metrics(helm: str) -> None:
    objects = render(
        helm, CRONJOB, sets=("config.pushgateway.url=null", "cronjob.pushMetrics=false")
    )
    (container,) = pod_spec(objects)["containers"]
    assert "--push-metrics" not in container["args"]


def test_cronjob_concurrency_other_than_forbid_fails(helm: str) -> None:
    err = render_error(helm, CRONJOB, sets=("cronjob.concurrencyPolicy=Allow",))
    assert "Forbid" in err


def test_unknown_mode_fails(helm: str) -> None:
    err = render_error(helm, DEPLOYMENT, sets=("mode=daemonset",))
    assert "mode" in err and "'deployment', 'cronjob'" in err  # values.schema.json


def test_schema_catches_misspelt_keys(helm: str) -> None:
    err = render_error(helm, DEPLOYMENT, sets=("serviceMonitor.enable=true",))
    assert "additional properties 'enable' not allowed" in err
    err = render_error(helm, DEPLOYMENT, sets=("prometheusRule.errorRate.ratio=ten",))
    assert "errorRate/ratio" in err


# --- configuration ----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_no_secret_in_any_configmap(helm: str, case: str) -> None:
    objects = render(helm, *CASES[case], sets=CHART_SECRET)
    assert one(objects, "Secret")  # the values did go somewhere: into the Secret
    encoded = [base64.b64encode(s.encode()).decode() for s in SECRET_VALUES]
    for cm in by_kind(objects, "ConfigMap"):
        text = json.dumps(cm)
        for needle in (*SECRET_VALUES, *encoded):
            assert needle not in text, f"secret material in ConfigMap {cm['metadata']['name']}"
    config = yaml.safe_load(config_map(objects)["data"]["syncd.yaml"])
    assert "client_secret" not in config["keycloak"]
    assert "api_key" not in config["litellm"]
    secret_dir = "/var/run/secrets/syncd"
    assert config["keycloak"]["client_secret_file"] == f"{secret_dir}/keycloak-client-secret"
    assert config["litellm"]["api_key_file"] == f"{secret_dir}/litellm-api-key"


@pytest.mark.parametrize(
    "key", ["keycloak.client_secret", "litellm.api_key", "keycloak.client_secret_file"]
)
def test_secret_keys_in_config_values_are_refused(helm: str, key: str) -> None:
    err = render_error(helm, DEPLOYMENT, sets=(f"config.{key}=oops",))
    assert f"config.{key}" in err


def test_pushgateway_job_comes_from_metrics_job(helm: str) -> None:
    objects = render(helm, CRONJOB, sets=("metrics.job=syncd-prod",))
    config = yaml.safe_load(config_map(objects)["data"]["syncd.yaml"])
    assert config["pushgateway"]["job"] == "syncd-prod"
    err = render_error(helm, CRONJOB, sets=("config.pushgateway.job=x",))
    assert "metrics.job" in err


@pytest.mark.parametrize("case", CASES)
def test_rendered_config_passes_load_settings(helm: str, case: str, tmp_path: Path) -> None:
    objects = render(helm, *CASES[case])
    config_file = tmp_path / "syncd.yaml"
    config_file.write_text(config_map(objects)["data"]["syncd.yaml"], encoding="utf-8")
    kc_secret = tmp_path / "keycloak-client-secret"
    kc_secret.write_text("kc-from-file\n", encoding="utf-8")
    api_key = tmp_path / "litellm-api-key"
    api_key.write_text("sk-from-file\n", encoding="utf-8")
    settings = load_settings(
        config_file,
        environ={
            # The paths the chart points at exist only in the pod: redirect them.
            "SYNCD_KEYCLOAK__CLIENT_SECRET_FILE": str(kc_secret),
            "SYNCD_LITELLM__API_KEY_FILE": str(api_key),
        },
    )
    assert settings.keycloak.secret() == "kc-from-file"
    assert settings.litellm.key() == "sk-from-file"
    assert settings.keycloak.url == "http://keycloak.keycloak.svc:8080"
    assert settings.server.port == 9108
    assert settings.pushgateway.job == "syncd"


def _leaf_keys(data: Any, prefix: str = "") -> set[str]:
    if isinstance(data, dict) and data:
        keys: set[str] = set()
        for k, v in data.items():
            # teams.overrides is a map keyed by group path: its keys are data.
            if f"{prefix}{k}" == "teams.overrides":
                keys.add("teams.overrides")
                continue
            keys |= _leaf_keys(v, f"{prefix}{k}.")
        return keys
    return {prefix.rstrip(".")}


def test_config_values_mirror_the_example_file(helm: str) -> None:
    """Every key of config/syncd.example.yaml is in the rendered config, and no other."""
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    rendered = yaml.safe_load(config_map(render(helm, DEPLOYMENT))["data"]["syncd.yaml"])
    assert _leaf_keys(rendered) == _leaf_keys(example)
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    chart_owned = {"keycloak.client_secret_file", "litellm.api_key_file", "pushgateway.job"}
    assert _leaf_keys(values["config"]) == _leaf_keys(example) - chart_owned


def test_rendered_config_defaults_match_the_example(helm: str) -> None:
    """values.yaml carries the same defaults as the example, except where the
    chart deliberately differs (required URLs, JSON logs)."""
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    rendered = yaml.safe_load(config_map(render(helm, DEPLOYMENT))["data"]["syncd.yaml"])
    deliberate = {
        "keycloak.url", "keycloak.realm", "litellm.url", "logging.format",
        "selection.path_prefixes",  # set in ci/deployment-values.yaml
    }

    def flat(data: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(data, dict) and data and prefix != "teams.overrides.":
            out: dict[str, Any] = {}
            for k, v in data.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix.rstrip("."): data}

    ex, got = flat(example), flat(rendered)
    differing = {k for k in ex if ex[k] != got.get(k)}
    assert differing <= deliberate, {k: (ex[k], got.get(k)) for k in differing - deliberate}


# --- optional parts ------------------------------------------------------------------


def test_service_and_servicemonitor_select_the_pod(helm: str) -> None:
    objects = render(helm, DEPLOYMENT, ALL_ON)
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    service_labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "http-metrics"
    assert endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": "syncd"} in endpoint[
        "relabelings"
    ]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert service["spec"]["publishNotReadyAddresses"] is True


def test_servicemonitor_needs_the_service(helm: str) -> None:
    err = render_error(helm, DEPLOYMENT, sets=("serviceMonitor.enabled=true",))
    assert "service.enabled" in err


@pytest.mark.parametrize("case", ["deployment-all-on", "cronjob-all-on"])
def test_network_policy_allows_only_dns_keycloak_litellm(helm: str, case: str) -> None:
    objects = render(helm, *CASES[case])
    policy = one(objects, "NetworkPolicy")["spec"]
    assert "Egress" in policy["policyTypes"]
    assert policy["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "syncd",
        "app.kubernetes.io/instance": "syncd",
    }
    egress = policy["egress"]
    ports = [sorted((p["port"], p["protocol"]) for p in rule["ports"]) for rule in egress]
    assert ports[0] == [(53, "TCP"), (53, "UDP")]
    assert egress[1]["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keycloak"}}}
    ]
    assert egress[2]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert ports[2] == [(4000, "TCP")]
    assert all(rule.get("to") for rule in egress), "an egress rule without peers allows any host"
    if case.startswith("cronjob"):
        assert len(egress) == 4 and ports[3] == [(9091, "TCP")]  # the Pushgateway
        assert policy["policyTypes"] == ["Egress"]
    else:
        assert len(egress) == 3
        assert policy["ingress"][0]["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]


def test_network_policy_needs_peers(helm: str) -> None:
    err = render_error(helm, DEPLOYMENT, sets=("networkPolicy.enabled=true",))
    assert "networkPolicy.keycloak.to" in err


@pytest.mark.parametrize("case", ["deployment-all-on", "cronjob-all-on"])
def test_dashboard_configmap_for_the_grafana_sidecar(helm: str, case: str) -> None:
    objects = render(helm, *CASES[case])
    (cm,) = [o for o in by_kind(objects, "ConfigMap") if "syncd.json" in o["data"]]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Identity"
    assert json.loads(cm["data"]["syncd.json"]) == json.loads(DASHBOARD_FILE.read_text())


@pytest.mark.parametrize("case", ["deployment-all-on", "cronjob-all-on"])
def test_notes_render(helm: str, case: str, tmp_path: Path) -> None:
    """`helm template` skips NOTES.txt: render it through a copy of the chart."""
    chart = tmp_path / "syncd"
    shutil.copytree(CHART, chart)
    (chart / "files" / "NOTES.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "files/NOTES.txt") . | quote }}\n'
    )
    args = ["template", "syncd", str(chart), "--show-only", "templates/zz-notes.yaml"]
    for v in CASES[case]:
        args += ["-f", str(v)]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stderr
    notes = yaml.safe_load(proc.stdout)["data"]["notes"]
    assert "docs/runbook.md" in notes
    if case.startswith("cronjob"):
        assert "create job --from=cronjob/syncd" in notes
        assert "were not created" in notes  # service/serviceMonitor ignored in this mode
    else:
        assert "port-forward deploy/syncd 9108" in notes
