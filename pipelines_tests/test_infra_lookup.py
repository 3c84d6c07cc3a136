"""infra/lookup.py finds the existing cluster's VPC, private subnets, security group and OIDC issuer
by the cluster's name, against the AWS API of the moto server (EC2 + EKS over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from infra.lookup import INTERNAL_ELB_TAG, cluster_context, main
from pipelines_tests.services import s3_environ


def test_lookup_by_cluster_name_writes_the_stack_context(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_environ(s3_server).items():
        monkeypatch.setenv(name, value)
    ec2, eks = boto3.client("ec2"), boto3.client("eks")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]

    def subnet(cidr: str, zone: str, private: bool) -> str:
        sid = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
        role = INTERNAL_ELB_TAG if private else "kubernetes.io/role/elb"
        ec2.create_tags(Resources=[sid], Tags=[{"Key": role, "Value": "1"}])
        return sid

    private_a = subnet("10.42.1.0/24", "us-east-1a", True)
    private_b = subnet("10.42.2.0/24", "us-east-1b", True)
    public_a = subnet("10.42.101.0/24", "us-east-1a", False)
    sg = ec2.create_security_group(GroupName="eks-cluster", Description="eks", VpcId=vpc)["GroupId"]
    name = "data-platform-lookup"
    eks.create_cluster(
        name=name,
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": [public_a, private_b, private_a], "securityGroupIds": [sg]},
    )

    context = cluster_context(name)
    assert context["vpc_id"] == vpc and context["vpc_cidr"] == "10.42.0.0/16"
    assert context["private_subnet_ids"] == [private_a, private_b]
    assert context["availability_zones"] == ["us-east-1a", "us-east-1b"]
    assert context["eks_cluster_security_group_id"] == sg
    assert context["eks_oidc_issuer"].startswith("oidc.eks.") and "https" not in context["eks_oidc_issuer"]

    out = tmp_path / "cdk.context.json"
    out.write_text(json.dumps({"backup_retention_days": 30}))
    assert main(["--cluster", name, "--lake-bucket", "acme-lake", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["lake_bucket"] == "acme-lake" and written["backup_retention_days"] == 30
    # Every key the stack requires is there (the example cdk.json lists them).
    example = json.loads((Path(__file__).resolve().parents[1] / "infra" / "example-context.json").read_text())
    required = {k for k in example if not k.startswith("@") and k not in ("k8s_namespace", "service_account")}
    assert required - {"backup_retention_days", "github_repository"} <= set(written)
