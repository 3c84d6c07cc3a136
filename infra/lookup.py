"""Look the existing EKS cluster and its VPC up by the cluster's name and write them as CDK context.

    uv run python -m infra.lookup --cluster data-platform --lake-bucket acme-data-lake

writes ``infra/cdk.context.json`` (git-ignored; the CDK CLI reads it), so the stack gets the
VPC, its private subnets, the cluster's security group and OIDC issuer without anyone copying
IDs by hand. Needs ``eks:DescribeCluster``, ``ec2:DescribeVpcs`` and ``ec2:DescribeSubnets``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import boto3

CONTEXT_FILE = Path(__file__).resolve().parent / "cdk.context.json"
INTERNAL_ELB_TAG = "kubernetes.io/role/internal-elb"


def _is_private(subnet: dict[str, Any], tagged: bool) -> bool:
    tags = {t["Key"]: t["Value"] for t in subnet.get("Tags", [])}
    if tagged:  # EKS convention: private subnets carry the internal load-balancer role tag
        return tags.get(INTERNAL_ELB_TAG) == "1"
    return not subnet.get("MapPublicIpOnLaunch", False)


def cluster_context(cluster_name: str, eks: Any | None = None, ec2: Any | None = None) -> dict[str, Any]:
    """The stack's network and cluster context for ``cluster_name``."""
    eks = eks or boto3.client("eks")
    ec2 = ec2 or boto3.client("ec2")
    cluster = eks.describe_cluster(name=cluster_name)["cluster"]
    vpc_config = cluster["resourcesVpcConfig"]
    vpc = ec2.describe_vpcs(VpcIds=[vpc_config["vpcId"]])["Vpcs"][0] if "vpcId" in vpc_config else None
    subnets = ec2.describe_subnets(SubnetIds=vpc_config["subnetIds"])["Subnets"]
    if vpc is None:
        vpc = ec2.describe_vpcs(VpcIds=[subnets[0]["VpcId"]])["Vpcs"][0]
    tagged = any(t["Key"] == INTERNAL_ELB_TAG for s in subnets for t in s.get("Tags", []))
    private = sorted(
        (s for s in subnets if _is_private(s, tagged)), key=lambda s: (s["AvailabilityZone"], s["SubnetId"])
    )
    # One subnet per zone: the stack imports them as a symmetric VPC (subnets x zones).
    per_zone: dict[str, str] = {}
    for subnet in private:
        per_zone.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
    if len(per_zone) < 2:
        raise ValueError(
            f"cluster {cluster_name}: found {len(per_zone)} private subnet zone(s), need 2 or more"
        )
    security_group = vpc_config.get("clusterSecurityGroupId") or vpc_config["securityGroupIds"][0]
    return {
        "eks_cluster_name": cluster_name,
        "vpc_id": vpc["VpcId"],
        "vpc_cidr": vpc["CidrBlock"],
        "availability_zones": list(per_zone),
        "private_subnet_ids": list(per_zone.values()),
        "eks_cluster_security_group_id": security_group,
        "eks_oidc_issuer": cluster["identity"]["oidc"]["issuer"].removeprefix("https://"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.lookup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cluster", required=True, help="name of the existing EKS cluster")
    parser.add_argument("--lake-bucket", required=True, help="name of the lake bucket to create")
    parser.add_argument("--deployment", default="prod", help="lake prefix and secret-name prefix")
    parser.add_argument("--out", type=Path, default=CONTEXT_FILE, help="context file to write")
    args = parser.parse_args(argv)
    context = {
        "deployment": args.deployment,
        "lake_bucket": args.lake_bucket,
        **cluster_context(args.cluster),
    }
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.write_text(json.dumps({**existing, **context}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
