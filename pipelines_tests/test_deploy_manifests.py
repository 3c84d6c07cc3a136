"""deploy/: the NetworkPolicies and the bootstrap Job against the Kubernetes schemas (offline,
kubernetes-validate), and what each policy lets through."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
EXAMPLE = {"<VPC_CIDR>": "10.0.0.0/16", "<SHOP_DB_CIDR>": "10.20.0.15/32"}


def _docs(name: str) -> list[dict[str, Any]]:
    text = (DEPLOY / name).read_text()
    text = re.sub(r"<[A-Z_]+>", lambda m: EXAMPLE.get(m.group(0), "example"), text)
    return [d for d in yaml.safe_load_all(text) if d]


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    version = kubernetes_validate.latest_version()
    kinds = []
    for name in ("networkpolicies.yaml", "bootstrap-db-job.yaml"):
        for doc in _docs(name):
            kubernetes_validate.validate(doc, version, strict=True)
            kinds.append(doc["kind"])
    assert kinds.count("NetworkPolicy") >= 5 and "Job" in kinds
    job = next(d for d in _docs("bootstrap-db-job.yaml") if d["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["pipelines", "bootstrap-db"]  # what test_bootstrap.py runs
    assert container["envFrom"] == [{"secretRef": {"name": "pipelines-bootstrap-secrets"}}]


def test_a_misspelt_field_is_caught() -> None:
    doc = _docs("networkpolicies.yaml")[0]
    doc["spec"]["podSelectr"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def _policies() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"] for d in _docs("networkpolicies.yaml")}


def _egress_ports(spec: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in spec.get("egress", []) for p in rule.get("ports", [])}


def test_default_deny_then_only_the_needed_ports() -> None:
    policies = _policies()
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert _egress_ports(policies["allow-dns"]) == {53}
    assert _egress_ports(policies["run-pods"]) == {5432, 443, 4000}
    assert _egress_ports(policies["code-location"]) == {5432, 443}
    assert _egress_ports(policies["webserver-daemon"]) == {5432, 443, 4000}
    assert _egress_ports(policies["bootstrap-db"]) == {5432}
    # Nothing reaches run pods; the code location only on its gRPC port, from Dagster's own pods.
    assert "ingress" not in policies["run-pods"] and "Ingress" in policies["run-pods"]["policyTypes"]
    (grpc,) = policies["code-location"]["ingress"]
    assert grpc["ports"] == [{"protocol": "TCP", "port": 4000}]
    sources = [next(iter(s["podSelector"]["matchLabels"].values())) for s in grpc["from"]]
    assert sources == ["dagster-webserver", "dagster-daemon", "run_worker"]
    # PostgreSQL only to the VPC (Aurora, RDS Proxy) and the shop database, never to anywhere.
    for spec in policies.values():
        for rule in spec.get("egress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if 5432 in ports:
                cidrs = {t["ipBlock"]["cidr"] for t in rule["to"]}
                assert cidrs <= set(EXAMPLE.values()), cidrs
