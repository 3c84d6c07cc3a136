"""deploy/api: the manifests parse, hang together, and match what the API reads and serves."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.api import create_app
from pipelines.api.auth import parse_keys, token_hash
from pipelines.platform.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "api"


def manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, path
        found[docs[0]["kind"]] = docs[0]
    return found


def test_kustomization_lists_every_manifest_but_the_optional_ingress() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml", "ingress.yaml"}
    assert set(kustomization["resources"]) == files
    assert set(manifests()) == {"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount", "Ingress"}


def test_deployment_is_replicated_probed_and_locked_down() -> None:
    docs = manifests()
    deployment = docs["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "pipelines.api"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"

    env = {e["name"]: e for e in container["env"]}
    assert env["PIPELINES_ENV"]["value"] == "prod"
    assert env["PIPELINES_API_PORT"]["value"] == str(container["ports"][0]["containerPort"])
    # its own read-only login, never the pipeline's; every secret from a Secret, none inline
    assert "PIPELINES_PG_USER" not in env and "PIPELINES_PG_PASSWORD" not in env
    assert "secretKeyRef" in env["PIPELINES_API_PG_PASSWORD"]["valueFrom"]
    assert "PIPELINES_API_KEYS" not in env
    for name, entry in env.items():
        if any(word in name for word in ("PASSWORD", "SECRET", "TOKEN")):
            assert "value" not in entry, name
    (mount,) = container["volumeMounts"]
    assert env["PIPELINES_API_KEYS_FILE"]["value"] == f"{mount['mountPath']}/keys.json"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "pipelines-api-keys" and mount["readOnly"] is True


def test_service_pdb_and_ingress_point_at_the_pods() -> None:
    docs = manifests()
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service, pdb, ingress = docs["Service"], docs["PodDisruptionBudget"], docs["Ingress"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < docs["Deployment"]["spec"]["replicas"]
    port_names = {p["name"] for p in docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert ingress["spec"]["tls"]


def test_probe_paths_are_open_endpoints_of_the_app(built_warehouse: Settings) -> None:
    from fastapi.testclient import TestClient

    app = create_app(built_warehouse, keys=parse_keys(f'{{"{token_hash("x")}": "*"}}', "test"))
    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    client = TestClient(app)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert client.get(container[probe]["httpGet"]["path"]).status_code == 200, probe


@pytest.mark.skipif(
    importlib.util.find_spec("kubernetes_validate") is None, reason="kubernetes-validate not installed"
)
def test_manifests_match_the_kubernetes_schema() -> None:
    import kubernetes_validate

    validated = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, "1.30", strict=True)  # raises on any schema error
            validated.append(doc["kind"])
    assert {"Deployment", "Service"} <= set(validated)
