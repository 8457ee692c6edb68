"""The deploy folder: yamllint, offline schema validation of every Kubernetes
manifest, the security properties the operations runbook promises (non-root,
read-only root filesystem, no capabilities, probes, resource limits, default-deny
network policies with explicit allows, PDB/HPA on the Deployment's pods), the
compose file, and the Dockerfile."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from broker.health import router as health_router

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
BROKER_PORT = 8080
HEALTH_PATHS = {route.path for route in health_router.routes}  # type: ignore[attr-defined]
# Oldest supported Kubernetes minor and the newest the validator ships.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]


# ----------------------------------------------------------------- helpers
def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in manifest_files():
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


MANIFESTS = load_manifests()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [m for m in MANIFESTS if m["kind"] == kind]


def one(kind: str) -> dict[str, Any]:
    found = of_kind(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    for m in MANIFESTS:
        if m["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def image_tag_ok(image: str) -> bool:
    """An explicit tag (or digest) that is not ``latest``."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "" and tag != "latest"


# ----------------------------------------------------------------- yamllint
def test_yamllint_is_clean_over_deploy() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(DEPLOY / ".yamllint"), "."],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------- schemas
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {where}: {exc}")


def test_the_schema_check_rejects_a_wrong_manifest() -> None:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text(encoding="utf-8"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]
    namespaces = {m["metadata"].get("namespace") for m in MANIFESTS if m["kind"] != "Namespace"}
    assert namespaces == {kustomization["namespace"]} == {one("Namespace")["metadata"]["name"]}


# ----------------------------------------------------------------- pods
@pytest.mark.parametrize(("name", "template"), list(pod_templates()))
def test_pods_run_non_root_read_only_without_capabilities(
    name: str, template: dict[str, Any]
) -> None:
    spec = template["spec"]
    pod = spec.get("securityContext", {})
    assert pod.get("runAsNonRoot") is True, name
    assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
    assert spec.get("automountServiceAccountToken") is False, name
    assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
    mounted_paths: set[str] = set()
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        where = f"{name} container {c['name']}"
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod.get("runAsUser", 1)) != 0, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("privileged", False) is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not sc.get("capabilities", {}).get("add"), where
        assert sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type") == (
            "RuntimeDefault"
        ), where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), where
        assert image_tag_ok(c["image"]), f"{where}: {c['image']}"
        mounted_paths |= {m["mountPath"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{name}: volume {mount['name']} is not defined"
    # The broker writes only to /tmp (a volume, the root filesystem is read-only).
    broker = [c for c in spec["containers"] if "chain-broker" in c["image"]]
    assert broker and all(
        "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])} for c in broker
    ), name


def broker_deployment() -> dict[str, Any]:
    return one("Deployment")


def container(name: str) -> dict[str, Any]:
    spec = broker_deployment()["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def test_deployment_probes_and_ports() -> None:
    deployment = broker_deployment()
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    broker = container("broker")
    ports = {p["name"]: p["containerPort"] for p in broker["ports"]}
    assert ports == {"http": BROKER_PORT}
    assert broker["args"][0] == "serve" and "--no-migrate" in broker["args"]
    assert broker["args"][broker["args"].index("--port") + 1] == str(BROKER_PORT)
    assert broker["args"][broker["args"].index("--host") + 1] == "0.0.0.0"
    for probe, path in [
        ("startupProbe", "/health/live"),
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ]:
        assert broker[probe]["httpGet"]["path"] == path in HEALTH_PATHS
        assert broker[probe]["httpGet"]["port"] in ("http", BROKER_PORT)
    for c in spec["template"]["spec"]["containers"]:
        assert "livenessProbe" in c and "readinessProbe" in c, c["name"]


def test_the_policy_folder_is_a_writable_volume() -> None:
    """Uploaded agreement versions are installed into every instance's policy
    folder, so it cannot live on the read-only root filesystem."""
    pod = broker_deployment()["spec"]["template"]["spec"]
    broker = container("broker")
    policy_dir = next(e["value"] for e in broker["env"] if e["name"] == "BROKER_POLICY_DIR")
    mount = next(m for m in broker["volumeMounts"] if m["mountPath"] == policy_dir)
    assert not mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
    (seed,) = [
        c
        for c in pod["initContainers"]
        if any(m["name"] == mount["name"] for m in c["volumeMounts"])
    ]
    assert seed["image"] == broker["image"] and seed["command"][-1].startswith(policy_dir)
    for name in ("broker-1", "broker-2"):
        service = compose()["services"][name]
        assert any(v.endswith(":/srv/broker/policies") for v in service["volumes"]), name


def test_opa_sidecar_loads_the_bundle_from_the_configmap() -> None:
    pod = broker_deployment()["spec"]["template"]["spec"]
    opa = container("opa")
    assert opa["args"][:2] == ["run", "--server"] and "--bundle" in opa["args"]
    assert any(a.startswith("--verification-key=") for a in opa["args"])
    assert "--addr=127.0.0.1:8181" in opa["args"]  # only the broker in the pod reaches it
    volume = next(v for v in pod["volumes"] if v.get("configMap"))
    bundle = next(
        m for m in of_kind("ConfigMap") if m["metadata"]["name"] == volume["configMap"]["name"]
    )
    mount = next(m for m in opa["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    files = {*bundle.get("data", {}), *bundle.get("binaryData", {})}
    assert {f"{mount['mountPath']}/{name}" for name in files} >= {
        a for a in opa["args"] if a.startswith(mount["mountPath"])
    }
    config = next(m for m in of_kind("ConfigMap") if m["metadata"]["name"] == "broker-config")
    assert config["data"]["BROKER_POLICY_ENGINE"] == "opa"
    assert config["data"]["BROKER_OPA_URL"] == "http://127.0.0.1:8181"
    assert config["data"]["BROKER_ENVIRONMENT"] == "production"
    assert config["data"]["BROKER_KEY_BACKEND"] == "pkcs11"


def test_secrets_hold_placeholders_only() -> None:
    secrets = of_kind("Secret")
    assert secrets
    for secret in secrets:
        assert "data" not in secret, secret["metadata"]["name"]
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in value, f"{secret['metadata']['name']}.{key}"
    names = {s["metadata"]["name"] for s in secrets}
    for c in broker_deployment()["spec"]["template"]["spec"]["containers"]:
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in names
    env = next(s for s in secrets if "BROKER_PSEUDONYM_KEY" in s["stringData"])
    assert {"BROKER_DATABASE_URL", "BROKER_PKCS11_PIN"} <= set(env["stringData"])


def test_migration_job_runs_db_upgrade() -> None:
    job = one("Job")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (migrate,) = spec["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    assert migrate["image"] == container("broker")["image"]


# ----------------------------------------------------------------- service, HPA, PDB
def test_service_hpa_and_pdb_target_the_deployment() -> None:
    deployment = broker_deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]

    service = one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert selects(service["spec"]["selector"], labels)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]

    hpa = one("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert hpa["spec"]["minReplicas"] >= 2

    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    # The PDB does not also cover the migration job's pods.
    job_labels = one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not selects(pdb["spec"]["selector"]["matchLabels"], job_labels)


# ----------------------------------------------------------------- network policies
def policies_for(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        p
        for p in of_kind("NetworkPolicy")
        if selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
    ]


def test_network_policy_denies_by_default() -> None:
    deny = [p for p in of_kind("NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    spec = deny[0]["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert not spec.get("ingress") and not spec.get("egress")
    # Every other policy names its pods and allows only specific peers and ports.
    for policy in of_kind("NetworkPolicy"):
        for rule in [*policy["spec"].get("ingress", []), *policy["spec"].get("egress", [])]:
            peers = rule.get("from", rule.get("to"))
            assert peers, f"{policy['metadata']['name']}: a rule without peers allows everyone"
            assert rule.get("ports"), f"{policy['metadata']['name']}: a rule without ports"
            for peer in peers:
                assert peer != {} and peer.get("ipBlock", {}).get("cidr") != "0.0.0.0/0"


def ports_of(rules: list[dict[str, Any]]) -> set[tuple[int, str]]:
    return {(p["port"], p.get("protocol", "TCP")) for r in rules for p in r["ports"]}


def test_network_policy_allows_what_the_broker_needs() -> None:
    labels = broker_deployment()["spec"]["template"]["metadata"]["labels"]
    (policy,) = [p for p in policies_for(labels) if p["spec"]["podSelector"] != {}]
    spec = policy["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # Ingress: only the broker port, from the ingress controller (and the scraper).
    assert ports_of(spec["ingress"]) == {(BROKER_PORT, "TCP")}
    sources = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in spec["ingress"]
        for peer in rule["from"]
    ]
    assert "ingress-nginx" in sources and set(sources) <= {"ingress-nginx", "monitoring"}
    # Egress: DNS, PostgreSQL, HTTPS to the partner systems; nothing else.
    assert ports_of(spec["egress"]) == {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (443, "TCP")}

    job_labels = one("Job")["spec"]["template"]["metadata"]["labels"]
    (migrate,) = [p for p in policies_for(job_labels) if p["spec"]["podSelector"] != {}]
    assert not migrate["spec"].get("ingress")
    assert ports_of(migrate["spec"]["egress"]) == {(53, "UDP"), (53, "TCP"), (5432, "TCP")}


# ----------------------------------------------------------------- compose
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def test_compose_runs_two_brokers_on_one_postgres() -> None:
    services = compose()["services"]
    brokers = {
        name: s
        for name, s in services.items()
        if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile" and "command" not in s
    }
    assert sorted(brokers) == ["broker-1", "broker-2"]
    urls = {s["environment"]["BROKER_DATABASE_URL"] for s in brokers.values()}
    assert len(urls) == 1 and "@postgres:5432/" in urls.pop()
    for name, s in brokers.items():
        env = s["environment"]
        assert env["BROKER_ENVIRONMENT"] == "production", name
        assert env["BROKER_POLICY_ENGINE"] == "opa" and env["BROKER_OPA_URL"].startswith(
            "http://opa:"
        ), name
        assert env["BROKER_KEY_BACKEND"] == "pkcs11", name
        assert {"BROKER_PKCS11_MODULE", "BROKER_PKCS11_TOKEN_LABEL", "BROKER_PKCS11_PIN"} <= set(
            env
        ), name
        assert s["user"].split(":")[0] not in ("0", "root"), name
        assert s["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert not s.get("ports"), f"{name}: reached only through the load balancer"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert "--bundle" in services["opa"]["command"]
    upstreams = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    for name in brokers:
        assert f"server {name}:{BROKER_PORT}" in upstreams


def test_compose_services_are_read_only_and_health_checked() -> None:
    for name, s in compose()["services"].items():
        assert s.get("read_only") is True, name
        assert image_tag_ok(s["image"]), f"{name}: {s['image']}"
        one_shot = s.get("restart") == "no"
        check = s.get("healthcheck", {})
        if one_shot:
            continue
        assert check and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        if name.startswith("broker-"):
            urls = re.findall(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", " ".join(check["test"]))
            assert urls and all(
                int(port) == BROKER_PORT and path in HEALTH_PATHS for port, path in urls
            ), name
            assert s["cap_drop"] == ["ALL"], name
            assert s["tmpfs"], name


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin")
    result = subprocess.run(
        [
            docker,
            "compose",
            "--env-file",
            str(DEPLOY / ".env.example"),
            "-f",
            str(COMPOSE),
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_env_example_holds_placeholders_for_every_secret() -> None:
    values = dict(
        line.split("=", 1)
        for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text(encoding="utf-8")))
    assert required <= set(values)
    for name in ("POSTGRES_PASSWORD", "BROKER_PSEUDONYM_KEY", "BROKER_PKCS11_PIN"):
        assert values[name].startswith("REPLACE_ME"), name


# ----------------------------------------------------------------- Dockerfile
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_runs_as_non_root_without_latest_tags() -> None:
    args: dict[str, str] = {}
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            parent = stages.get(image)
            if parent is None:
                assert image_tag_ok(image), f"FROM {image}"
            current = {"user": parent["user"] if parent else "0", "instructions": {}}
            stages[name] = current
        elif current is not None:
            if keyword == "USER":
                current["user"] = rest.split(":")[0]
            current["instructions"].setdefault(keyword, []).append(rest)
    assert len(stages) >= 2, "a multi-stage build"
    final = list(stages.values())[-1]
    assert final["user"] not in ("0", "root"), "the image runs as a non-root user"
    for name in ("runtime", "softhsm", "production"):
        assert stages[name]["user"] not in ("0", "root"), name
    assert ":latest" not in DOCKERFILE.read_text(encoding="utf-8")


def test_dockerfile_health_check_and_command() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    (health,) = [rest for k, rest in instructions if k == "HEALTHCHECK"]
    paths = re.findall(rf"http://127\.0\.0\.1:{BROKER_PORT}(/[\w/]+)", health)
    assert paths and set(paths) <= HEALTH_PATHS
    assert f"EXPOSE {BROKER_PORT}" in [f"{k} {r}" for k, r in instructions]
    (entrypoint,) = [rest for k, rest in instructions if k == "ENTRYPOINT"]
    cmd = [rest for k, rest in instructions if k == "CMD"][-1]
    assert shlex.split(entrypoint.strip("[]").replace(",", " ")) == ["broker"]
    command = shlex.split(cmd.strip("[]").replace(",", " "))
    assert command[0] == "serve" and command[command.index("--host") + 1] == "0.0.0.0"
    assert "--no-migrate" in command
    assert keywords.count("FROM") >= 2
    # The writable paths are volumes: keys and /tmp; bytecode is not written at run time.
    assert "PYTHONDONTWRITEBYTECODE=1" in DOCKERFILE.read_text(encoding="utf-8")
