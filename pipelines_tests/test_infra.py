"""The CDK app (infra/), offline: synth, cfn-lint, cdk-nag, checkov, the template's properties, and
the bucket configuration applied to the S3 test server (moto) and read back."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.lifecycle import apply_lifecycle, load_rules, to_s3_rules
from pipelines_tests.services import S3Env

REPO = Path(__file__).resolve().parents[1]
CHECKOV = "checkov==3.3.30"  # isolated (uvx): its pins would downgrade boto3 in the project
CONTEXT = json.loads((REPO / "infra" / "cdk.json").read_text())["context"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run docs/production.md's synth command into a temporary cdk.out."""
    out = tmp_path_factory.mktemp("cdk.out")
    env = {**os.environ, "CDK_OUTDIR": str(out), "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "infra.app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def template(synth: Path) -> dict[str, Any]:
    return json.loads((synth / "PipelinesStack.template.json").read_text())


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def _one(template: dict[str, Any], kind: str, name_start: str = "") -> dict[str, Any]:
    found = [r for k, r in _of_type(template, kind).items() if k.startswith(name_start)]
    assert len(found) == 1, (kind, name_start, len(found))
    return found[0]["Properties"]


def test_cdk_nag_reports_nothing_but_suppressions_with_reasons(synth: Path) -> None:
    rows = list(csv.DictReader((synth / "AwsSolutions--PipelinesStack-NagReport.csv").open()))
    assert rows, "cdk-nag ran no rule"
    assert {r["Compliance"] for r in rows} <= {"Compliant", "Suppressed", "N/A"}
    suppressed = [r for r in rows if r["Compliance"] == "Suppressed"]
    assert suppressed and all(len(r["Exception Reason"]) > 20 for r in suppressed)


def test_cfn_lint_passes_on_every_template(synth: Path) -> None:
    templates = sorted(synth.glob("*.template.json"))
    assert templates
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), *map(str, templates)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("uvx") is None, reason="uvx (comes with uv) is needed to run checkov")
def test_checkov_passes_and_every_skip_has_a_reason(synth: Path, template: dict[str, Any]) -> None:
    proc = subprocess.run(
        [
            "uvx",
            "--from",
            CHECKOV,
            "checkov",
            "-d",
            str(synth),
            "--framework",
            "cloudformation",
            "--skip-download",
            "--quiet",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c["check_id"] + " " + c["resource"] for r in reports for c in r["results"]["failed_checks"]]
    assert failed == [] and proc.returncode == 0, failed or proc.stderr[-2000:]
    assert sum(r["summary"]["passed"] for r in reports) > 50
    for resource in template["Resources"].values():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.match(r"CKV2?_AWS_\d+$", skip["id"]) and len(skip["comment"]) > 20


def test_lake_bucket_is_versioned_kms_encrypted_private_and_tls_only(template: dict[str, Any]) -> None:
    from aws_cdk.assertions import Match, Template

    t = Template.from_json(template)
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": CONTEXT["lake_bucket"],
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "BucketKeyEnabled": True,
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": {"Fn::GetAtt": [Match.string_like_regexp("^LakeKey"), "Arn"]},
                        },
                    }
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
        },
    )
    lake_id = next(k for k, r in _of_type(template, "AWS::S3::Bucket").items() if k.startswith("Lake"))
    policy = next(
        p["Properties"]["PolicyDocument"]
        for p in _of_type(template, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": lake_id}
    )
    deny = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny == [
        {
            "Action": "s3:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Resource": [
                {"Fn::GetAtt": [lake_id, "Arn"]},
                {"Fn::Join": ["", [{"Fn::GetAtt": [lake_id, "Arn"]}, "/*"]]},
            ],
        }
    ]
    keys = _of_type(template, "AWS::KMS::Key")
    assert all(k["Properties"]["EnableKeyRotation"] for k in keys.values()) and len(keys) == 2


def _cfn_rule_to_s3(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the shape of the S3 API (what to_s3_rules returns)."""
    out: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule["Prefix"]}}
    if "Transitions" in rule:
        out["Transitions"] = [
            {"Days": t["TransitionInDays"], "StorageClass": t["StorageClass"]} for t in rule["Transitions"]
        ]
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": rule["ExpirationInDays"]}
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        }
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return out


def _lake(template: dict[str, Any]) -> dict[str, Any]:
    return _one(template, "AWS::S3::Bucket", "Lake")


def test_synthesized_lifecycle_rules_equal_the_rules_file(template: dict[str, Any]) -> None:
    rules = [_cfn_rule_to_s3(r) for r in _lake(template)["LifecycleConfiguration"]["Rules"]]
    assert rules == to_s3_rules(load_rules(), CONTEXT["deployment"])
    warehouse = [r for r in rules if r["Filter"]["Prefix"].endswith("/warehouse/")]
    assert warehouse and all("Expiration" not in r and "Transitions" not in r for r in warehouse)
    assert all(r["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 1 for r in warehouse)


def test_bucket_configuration_applies_to_the_s3_server_and_reads_back(
    template: dict[str, Any], s3_env: S3Env
) -> None:
    """What the stack puts on the bucket, put on moto's: S3 accepts it, and pipelines.lifecycle
    finds nothing to change (the CDK rules and the CLI's rules are the same rules)."""
    client, bucket = s3_env.client(), s3_env.bucket
    props = _lake(template)
    key_arn = f"arn:aws:kms:{s3_env.region}:000000000000:key/test"
    client.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]}
    )
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    client.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"],
                        "KMSMasterKeyID": key_arn,
                    },
                    "BucketKeyEnabled": sse["BucketKeyEnabled"],
                }
            ]
        },
    )
    client.put_public_access_block(
        Bucket=bucket, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
    )
    rules = [_cfn_rule_to_s3(r) for r in props["LifecycleConfiguration"]["Rules"]]
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    lake_id = next(k for k in _of_type(template, "AWS::S3::Bucket") if k.startswith("Lake"))
    policy = next(
        p["Properties"]["PolicyDocument"]
        for p in _of_type(template, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": lake_id}
    )
    arn = f"arn:aws:s3:::{bucket}"
    resolved = json.loads(
        json.dumps(policy)
        .replace(
            json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [lake_id, "Arn"]}, "/*"]]}), json.dumps(arn + "/*")
        )
        .replace(json.dumps({"Fn::GetAtt": [lake_id, "Arn"]}), json.dumps(arn))
    )
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(resolved))

    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    got = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert got["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    assert all(client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    stored_policy = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
    assert stored_policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    on_bucket = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {r["ID"] for r in on_bucket} == {r["ID"] for r in rules}
    report = apply_lifecycle(s3_env.uri(CONTEXT["deployment"]), dry_run=True)
    assert report["changed"] is False and len(report["unchanged"]) == len(load_rules())


def test_aurora_serverless_v2_is_parameterized_encrypted_tls_only_and_private(
    template: dict[str, Any],
) -> None:
    cluster = _one(template, "AWS::RDS::DBCluster")
    assert cluster["ServerlessV2ScalingConfiguration"] == {
        "MinCapacity": {"Ref": "MinAcu"},
        "MaxCapacity": {"Ref": "MaxAcu"},
    }
    assert set(template["Parameters"]) >= {"MinAcu", "MaxAcu"}
    assert cluster["StorageEncrypted"] is True and "KmsKeyId" in cluster
    assert cluster["BackupRetentionPeriod"] >= 7 and cluster["DeletionProtection"] is True
    assert cluster["Engine"] == "aurora-postgresql" and cluster["Port"] == 5432
    params = _one(template, "AWS::RDS::DBClusterParameterGroup")["Parameters"]
    assert params["rds.force_ssl"] == "1"
    instance = _one(template, "AWS::RDS::DBInstance")
    assert instance["DBInstanceClass"] == "db.serverless" and instance["PubliclyAccessible"] is False
    subnets = _one(template, "AWS::RDS::DBSubnetGroup")["SubnetIds"]
    assert subnets == CONTEXT["private_subnet_ids"]
    assert _one(template, "AWS::RDS::DBProxy")["RequireTLS"] is True

    # 5432 only, and only from security groups: the EKS cluster's, the proxy's, the rotation's.
    ingress = [r["Properties"] for r in _of_type(template, "AWS::EC2::SecurityGroupIngress").values()]
    cluster_id = next(iter(_of_type(template, "AWS::RDS::DBCluster")))
    cluster_port = {"Fn::GetAtt": [cluster_id, "Endpoint.Port"]}  # the cluster's Port, 5432 above
    assert ingress and all(i["FromPort"] == i["ToPort"] in (5432, cluster_port) for i in ingress)
    assert all("CidrIp" not in i and "SourceSecurityGroupId" in i for i in ingress)
    assert {"sg-" in str(i["SourceSecurityGroupId"]) for i in ingress} == {True, False}
    for sg in _of_type(template, "AWS::EC2::SecurityGroup").values():
        assert "SecurityGroupIngress" not in sg["Properties"]
        assert all(e.get("CidrIp") != "0.0.0.0/0" for e in sg["Properties"].get("SecurityGroupEgress", []))


def test_secrets_are_named_encrypted_and_the_admin_secret_rotates(template: dict[str, Any]) -> None:
    secrets = _of_type(template, "AWS::SecretsManager::Secret")
    names = {s["Properties"]["Name"] for s in secrets.values()}
    assert names == {
        f"pipelines/{CONTEXT['deployment']}/{s}"
        for s in ("db-admin", "db-dagster", "db-pipelines", "db-data-api", "shop-db-reader", "pii-salt")
    }
    assert all("KmsKeyId" in s["Properties"] for s in secrets.values())
    rotation = _one(template, "AWS::SecretsManager::RotationSchedule")
    admin = next(k for k, s in secrets.items() if s["Properties"]["Name"].endswith("/db-admin"))
    assert rotation["SecretId"] == {"Ref": admin}
    assert rotation["HostedRotationLambda"]["RotationType"] == "PostgreSQLSingleUser"
    not_rotated = [s for k, s in secrets.items() if k != admin]
    assert all(
        any(x["id"] == "CKV2_AWS_57" for x in s["Metadata"]["checkov"]["skip"]) for s in not_rotated
    ), "every secret without rotation says why"


def _statements(template: dict[str, Any], role_prefix: str) -> list[dict[str, Any]]:
    role_id = next(k for k in _of_type(template, "AWS::IAM::Role") if k.startswith(role_prefix))
    return [
        s
        for p in _of_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_irsa_role_trusts_only_the_service_account_and_has_no_wildcards(template: dict[str, Any]) -> None:
    role = next(
        r["Properties"]
        for k, r in _of_type(template, "AWS::IAM::Role").items()
        if k.startswith("DagsterRole")
    )
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    issuer = CONTEXT["eks_oidc_issuer"]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Condition"] == {
        "StringEquals": {
            f"{issuer}:sub": f"system:serviceaccount:{CONTEXT['k8s_namespace']}:{CONTEXT['service_account']}",
            f"{issuer}:aud": "sts.amazonaws.com",
        }
    }
    statements = _statements(template, "DagsterRole")
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        assert s["Effect"] == "Allow" and not any("*" in a for a in actions), s
        assert "*" not in resources, s
    by_sid = {s["Sid"]: s for s in statements}
    prefix = CONTEXT["deployment"]
    assert by_sid["ListLakePrefix"]["Condition"] == {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    assert json.dumps(by_sid["LakeObjects"]["Resource"]).endswith(f'"/{prefix}/*"]]}}')
    assert len(by_sid["NamedSecrets"]["Resource"]) == 5  # not the admin secret
    boot = _statements(template, "BootstrapRole")
    assert {s["Sid"] for s in boot} == {"NamedSecrets", "SecretsKey"}  # no lake access


def test_ecr_backup_and_no_account_ids(template: dict[str, Any]) -> None:
    repo = _one(template, "AWS::ECR::Repository")
    assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repo["ImageTagMutability"] == "IMMUTABLE" and repo["RepositoryName"] == "pipelines"
    plan = _one(template, "AWS::Backup::BackupPlan")["BackupPlan"]
    assert min(r["Lifecycle"]["DeleteAfterDays"] for r in plan["BackupPlanRule"]) >= 7
    selection = _one(template, "AWS::Backup::BackupSelection")["BackupSelection"]
    assert "cluster:" in json.dumps(selection["Resources"])
    assert not _of_type(template, "AWS::EC2::VPC") and not _of_type(template, "AWS::EKS::Cluster")
    for path in [*sorted((REPO / "infra").glob("*.py")), REPO / "infra" / "cdk.json"]:
        assert not re.search(r"\b\d{12}\b", path.read_text()), f"{path} holds an account id"
    assert not re.search(r"\b\d{12}\b", json.dumps(template))
