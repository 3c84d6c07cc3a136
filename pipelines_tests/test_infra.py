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
import yaml

from pipelines.platform.lifecycle import apply_lifecycle, load_rules, to_s3_rules
from pipelines_tests.services import S3Env

REPO = Path(__file__).resolve().parents[1]
CHECKOV = "checkov==3.3.30"  # isolated (uvx): its pins would downgrade boto3 in the project
EXAMPLE_CONTEXT = REPO / "infra" / "example-context.json"
CONTEXT = json.loads(EXAMPLE_CONTEXT.read_text())


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run docs/production.md's synth command into a temporary cdk.out."""
    docs = (REPO / "docs" / "production.md").read_text()
    assert "uv run python -m infra.app\n" in docs
    assert "uv run cfn-lint infra/cdk.out/PipelinesStack.template.json" in docs
    assert f"uvx --from {CHECKOV} checkov -d infra/cdk.out --framework cloudformation --skip-download" in docs
    out = tmp_path_factory.mktemp("cdk.out")
    env = {
        **os.environ,
        "CDK_OUTDIR": str(out),
        "PIPELINES_INFRA_CONTEXT": str(EXAMPLE_CONTEXT),
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
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
    """What the stack puts on the bucket, put on moto's: S3 accepts it, and pipelines.platform.lifecycle
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
    for path in [*sorted((REPO / "infra").glob("*.py")), REPO / "infra" / "cdk.json", EXAMPLE_CONTEXT]:
        assert not re.search(r"\b\d{12}\b", path.read_text()), f"{path} holds an account id"
    assert not re.search(r"\b\d{12}\b", json.dumps(template))


# --------------------------------------------------------------- Helm values, deploy/, stack agree

HELM_VALUES = REPO / "helm-values.yaml"
DEPLOY = REPO / "deploy"


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _stack_secrets(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        s["Properties"]["Name"]: s["Properties"]
        for s in _of_type(template, "AWS::SecretsManager::Secret").values()
    }


def test_secret_names_and_keys_agree_with_the_stack_values_and_code(template: dict[str, Any]) -> None:
    import yaml

    values = yaml.safe_load(HELM_VALUES.read_text())
    stack = _stack_secrets(template)
    externals = {
        d["metadata"]["name"]: d
        for d in _yaml_docs(DEPLOY / "external-secrets.yaml")
        if d["kind"] == "ExternalSecret"
    }
    remote = {ref["remoteRef"]["key"] for d in externals.values() for ref in d["spec"]["data"]}
    assert remote == set(stack), (
        "every ExternalSecret reads a secret the stack creates, and every one is read"
    )
    for ext in externals.values():
        assert ext["spec"]["target"]["name"] == ext["metadata"]["name"]
    assert values["global"]["postgresqlSecretName"] in externals
    deployment = values["dagster-user-deployments"]["deployments"][0]
    env_secrets = {s["name"] for s in deployment["envSecrets"]}
    env_secrets |= {s["name"] for s in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]}
    assert env_secrets == {"pipelines-secrets"} and env_secrets <= set(externals)
    pipeline_keys = {ref["secretKey"] for ref in externals["pipelines-secrets"]["spec"]["data"]}
    code = "\n".join(p.read_text() for p in (REPO / "pipelines").rglob("*.py"))
    for key in pipeline_keys:
        assert f'"{key}"' in code, f"{key} is in pipelines-secrets but no code reads it"
    # Dagster's storage user: the chart's username, the secret's username, the bootstrap role.
    dagster_user = json.loads(
        stack[f"pipelines/{CONTEXT['deployment']}/db-dagster"]["GenerateSecretString"]["SecretStringTemplate"]
    )["username"]
    assert values["postgresql"]["postgresqlUsername"] == dagster_user
    pipelines_user = json.loads(
        stack[f"pipelines/{CONTEXT['deployment']}/db-pipelines"]["GenerateSecretString"][
            "SecretStringTemplate"
        ]
    )["username"]
    shop_user = json.loads(
        stack[f"pipelines/{CONTEXT['deployment']}/shop-db-reader"]["GenerateSecretString"][
            "SecretStringTemplate"
        ]
    )["username"]
    assert deployment["env"]["PIPELINES_PG_USER"] == pipelines_user
    assert deployment["env"]["SHOP_DB_USER"] == shop_user


def test_service_accounts_buckets_and_databases_agree(template: dict[str, Any]) -> None:
    import yaml

    from pipelines.platform.bootstrap import BootstrapPlan

    values = yaml.safe_load(HELM_VALUES.read_text())
    namespace, sa = CONTEXT["k8s_namespace"], CONTEXT["service_account"]
    assert values["serviceAccount"]["name"] == values["global"]["serviceAccountName"] == sa
    stores = {
        d["metadata"]["name"]: d
        for d in _yaml_docs(DEPLOY / "external-secrets.yaml")
        if d["kind"] == "SecretStore"
    }
    accounts = {
        s["spec"]["provider"]["aws"]["auth"]["jwt"]["serviceAccountRef"]["name"] for s in stores.values()
    }
    job_docs = _yaml_docs(DEPLOY / "bootstrap-db-job.yaml")
    bootstrap_sa = next(d for d in job_docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    assert accounts == {sa, bootstrap_sa}
    every = [
        *_yaml_docs(DEPLOY / "external-secrets.yaml"),
        *job_docs,
        *_yaml_docs(DEPLOY / "networkpolicies.yaml"),
    ]
    assert {d["metadata"]["namespace"] for d in every} == {namespace}
    for role_id, account in (("DagsterRole", sa), ("BootstrapRole", bootstrap_sa)):
        role = next(
            r["Properties"] for k, r in _of_type(template, "AWS::IAM::Role").items() if k.startswith(role_id)
        )
        cond = role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
        assert f"system:serviceaccount:{namespace}:{account}" in cond.values()

    env = values["dagster-user-deployments"]["deployments"][0]["env"]
    assert env["PIPELINES_LAKE_URI"] == f"s3://<LAKE_BUCKET>/{CONTEXT['deployment']}"
    assert values["computeLogManager"]["config"]["s3ComputeLogManager"]["prefix"].startswith(
        CONTEXT["deployment"] + "/"
    )
    outputs = template["Outputs"]
    assert outputs["LakeUri"]["Value"] == f"s3://{CONTEXT['lake_bucket']}/{CONTEXT['deployment']}"
    plan = BootstrapPlan.from_env(
        {
            "BOOTSTRAP_PG_HOST": "h",
            "BOOTSTRAP_PG_ADMIN_USER": "a",
            "BOOTSTRAP_PG_ADMIN_PASSWORD": "p",
            "DAGSTER_PG_PASSWORD": "p",
            "PIPELINES_PG_PASSWORD": "p",
            "DATA_API_PG_PASSWORD": "p",
        }
    )
    assert values["postgresql"]["postgresqlDatabase"] == plan.dagster_db
    assert (
        env["PIPELINES_DUCKLAKE_DB"] == plan.ducklake_db
        and env["PIPELINES_SQLMESH_STATE_DB"] == plan.sqlmesh_db
    )
    assert (
        env["PIPELINES_PG_USER"] == plan.pipelines.name
        and values["postgresql"]["postgresqlUsername"] == plan.dagster.name
    )
    stack_users = {
        json.loads(s["GenerateSecretString"]["SecretStringTemplate"])["username"]
        for name, s in _stack_secrets(template).items()
        if "/db-" in name and not name.endswith("/db-admin")
    }
    assert stack_users == {plan.dagster.name, plan.pipelines.name, plan.data_api.name}


def _example_outputs(template: dict[str, Any]) -> dict[str, dict[str, str]]:
    """What `cdk deploy --outputs-file` writes, with example values for every output."""
    from pipelines.ops.helm_fill import FROM_OUTPUTS

    assert set(FROM_OUTPUTS.values()) <= set(template["Outputs"]), "fill-values reads outputs the stack has"
    example = {
        "Region": "eu-west-1",
        "AccountId": "123456789012",
        "LakeBucketName": CONTEXT["lake_bucket"],
        "AuroraEndpoint": "pipelines.cluster-abc.eu-west-1.rds.amazonaws.com",
        "RdsProxyEndpoint": "pipelines-proxy.proxy-abc.eu-west-1.rds.amazonaws.com",
        "DagsterRoleName": "PipelinesStack-DagsterRole-ABC",
        "DagsterRoleArn": "arn:aws:iam::123456789012:role/PipelinesStack-DagsterRole-ABC",
        "BootstrapRoleArn": "arn:aws:iam::123456789012:role/PipelinesStack-BootstrapRole-DEF",
        "VpcCidr": CONTEXT["vpc_cidr"],
        "LakeUri": template["Outputs"]["LakeUri"]["Value"],
    }
    return {"PipelinesStack": {k: example.get(k, f"example-{k}") for k in template["Outputs"]}}


def test_fill_values_fills_every_placeholder_from_the_outputs(
    template: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import kubernetes_validate
    import yaml

    from pipelines.ops.cli import main

    outputs = tmp_path / "cdk-outputs.json"
    outputs.write_text(json.dumps(_example_outputs(template)))
    filled = tmp_path / "values.prod.yaml"
    # docs/production.md, step 2 (the same arguments).
    docs = (REPO / "docs" / "production.md").read_text()
    assert 'uv run pipelines fill-values --outputs cdk-outputs.json --image-tag "$TAG"' in docs
    assert "--set SHOP_DB_HOST=shop-replica.internal --set RATES_API_URL=https://rates.example.com/v1" in docs
    args = [
        "fill-values",
        "--outputs",
        str(outputs),
        "--image-tag",
        "3f2c1ab",
        "--set",
        "SHOP_DB_HOST=shop-replica.internal",
        "--set",
        "RATES_API_URL=https://rates.example.com/v1",
        "--out",
        str(filled),
    ]
    assert main(args) == 0
    text = filled.read_text()
    assert not re.search(r"<[A-Z_]+>", text)
    values = yaml.safe_load(text)
    example = _example_outputs(template)["PipelinesStack"]
    assert values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"] == example["DagsterRoleArn"]
    # the apps reach the PgBouncer sidecar on the loopback; the sidecar's upstreams are filled
    assert values["postgresql"]["postgresqlHost"] == "127.0.0.1"
    env = values["dagster-user-deployments"]["deployments"][0]["env"]
    assert env["PIPELINES_PG_HOST"] == "127.0.0.1"
    (sidecar_config,) = [
        m for m in values["extraManifests"] if m["metadata"]["name"] == "pipelines-pgbouncer"
    ]
    ini = sidecar_config["data"]["pgbouncer.ini"]
    assert f"dagster = host={example['RdsProxyEndpoint']} port=5432" in ini
    assert f"sqlmesh = host={example['AuroraEndpoint']} port=5432" in ini
    assert f"ducklake = host={example['AuroraEndpoint']} port=5432" in ini
    assert "shop = host=shop-replica.internal port=5432" in ini
    assert env["PIPELINES_RATES_API_URL"] == "https://rates.example.com/v1"
    assert (
        env["PIPELINES_LAKE_URI"]
        == example["LakeUri"]
        == f"s3://{CONTEXT['lake_bucket']}/{CONTEXT['deployment']}"
    )
    assert values["dagsterWebserver"]["image"]["repository"] == (
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pipelines"
    )
    assert HELM_VALUES.read_text().count("<") > 5, "the template in git keeps its placeholders"

    # The deploy/ manifests fill the same way and then validate against the Kubernetes schemas.
    version = kubernetes_validate.latest_version()
    for name in ("networkpolicies.yaml", "bootstrap-db-job.yaml", "external-secrets.yaml"):
        out = tmp_path / name
        assert (
            main(
                [
                    "fill-values",
                    "--outputs",
                    str(outputs),
                    "--values",
                    str(DEPLOY / name),
                    "--out",
                    str(out),
                    "--image-tag",
                    "3f2c1ab",
                    "--set",
                    "SHOP_DB_CIDR=10.20.0.15/32",
                ]
            )
            == 0
        )
        if name == "external-secrets.yaml":
            continue  # a CRD: no schema in kubernetes-validate; its names are cross-checked above
        for doc in _yaml_docs(out):
            kubernetes_validate.validate(doc, version, strict=True)


def test_fill_values_refuses_unfilled_or_unsafe_values(
    template: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.ops.cli import main

    outputs = tmp_path / "cdk-outputs.json"
    outputs.write_text(json.dumps(_example_outputs(template)))
    out = tmp_path / "values.yaml"
    assert main(["fill-values", "--outputs", str(outputs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "<IMAGE_TAG>" in err and "<SHOP_DB_HOST>" in err and not out.exists()
    assert (
        main(
            [
                "fill-values",
                "--outputs",
                str(outputs),
                "--out",
                str(out),
                "--image-tag",
                "x",
                "--set",
                "SHOP_DB_HOST=evil\n  injected: true",
            ]
        )
        == 2
    )
    assert "not a plain host name" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [
                "fill-values",
                "--outputs",
                str(outputs),
                "--out",
                str(HELM_VALUES),
                "--image-tag",
                "x",
                "--set",
                "SHOP_DB_HOST=h",
            ]
        )
        == 2
    )
    assert "new file" in capsys.readouterr().err


def test_the_data_api_role_reads_only_the_marts_files(template: dict[str, Any]) -> None:
    """The role deploy/api's service account names exists, trusts that service account only,
    and can read (never write) the marts' files and nothing else of the lake or the secrets."""
    role = next(
        r["Properties"] for k, r in _of_type(template, "AWS::IAM::Role").items() if k.startswith("ApiRole")
    )
    account = yaml.safe_load((REPO / "deploy" / "api" / "serviceaccount.yaml").read_text())
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "<API_ROLE_ARN>"
    cond = role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
    namespace = CONTEXT["k8s_namespace"]
    assert f"system:serviceaccount:{namespace}:{account['metadata']['name']}" in cond.values()
    statements = {s["Sid"]: s for s in _statements(template, "ApiRole")}
    assert {sid: s["Action"] for sid, s in statements.items()} == {
        "ListMartsPrefix": "s3:ListBucket",
        "MartsObjects": "s3:GetObject",
        "LakeKey": "kms:Decrypt",
    }
    marts = f"{CONTEXT['deployment']}/warehouse/sqlmesh__marts"
    assert statements["ListMartsPrefix"]["Condition"] == {"StringLike": {"s3:prefix": [marts, f"{marts}/*"]}}
    assert json.dumps(statements["MartsObjects"]["Resource"]).endswith(f'"/{marts}/*"]]}}')
    assert "ApiRoleArn" in template["Outputs"]


def test_the_plan_check_role_is_oidc_only_and_cannot_delete(template: dict[str, Any]) -> None:
    """CI's plan check holds no static key: GitHub's OIDC token of the repository's protected
    environment assumes it; it reads the lake and two secrets, and writes only new files below
    warehouse/ (no delete, no raw or landing zone)."""
    role = next(
        r["Properties"]
        for k, r in _of_type(template, "AWS::IAM::Role").items()
        if k.startswith("PlanCheckRole")
    )
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    issuer = "token.actions.githubusercontent.com"
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Condition"] == {
        "StringEquals": {
            f"{issuer}:sub": f"repo:{CONTEXT['github_repository']}:environment:plan-check",
            f"{issuer}:aud": "sts.amazonaws.com",
        }
    }
    statements = {s["Sid"]: s for s in _statements(template, "PlanCheckRole")}
    actions = {
        a
        for s in statements.values()
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert not {a for a in actions if "Delete" in a or a == "s3:*"}
    assert len(statements["NamedSecrets"]["Resource"]) == 2  # the pipelines login and the PII salt
    prefix = CONTEXT["deployment"]
    assert json.dumps(statements["WriteNewTableFiles"]["Resource"]).endswith(f'"/{prefix}/warehouse/*"]]}}')
    assert "PlanCheckRoleArn" in template["Outputs"]
