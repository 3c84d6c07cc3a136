"""The AWS foundation of one deployment: lake bucket, Aurora Serverless v2 + RDS Proxy, secrets,
the IRSA role of the ``dagster`` service account, ECR and backups.

The EKS cluster and its VPC already exist: they come in through context, looked up by the
cluster's name (``python -m infra.lookup``; keys in ``example-context.json`` and docs/production.md).
Names that the Helm values, the ExternalSecrets and the bootstrap read are module constants here,
so ``pipelines_tests/test_infra_crosscheck.py`` can compare them with those files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_backup as backup
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as sm
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from pipelines.platform.lifecycle import load_rules

POSTGRES_PORT = 5432
ECR_REPOSITORY = "pipelines"
ADMIN_USER = "postgres_admin"
# SQLMesh's physical schema of the marts models: the data API reads only its files.
MARTS_PHYSICAL_SCHEMA = "sqlmesh__marts"

# Database roles and the databases bootstrap-db creates (pipelines/platform/bootstrap.py reads these too).
DB_USERS = {"dagster": "dagster", "pipelines": "pipelines", "data_api": "data_api"}
# Secret name suffixes: <deployment>/<suffix> in Secrets Manager.
SECRET_SUFFIXES = ("db-admin", "db-dagster", "db-pipelines", "db-data-api", "shop-db-reader", "pii-salt")


@dataclass(frozen=True)
class DeploymentContext:
    """Everything that differs per deployment, from context (no account ids)."""

    deployment: str
    lake_bucket: str
    vpc_id: str
    vpc_cidr: str
    availability_zones: list[str]
    private_subnet_ids: list[str]
    eks_cluster_name: str
    eks_cluster_security_group_id: str
    eks_oidc_issuer: str
    k8s_namespace: str = "dagster"
    service_account: str = "dagster"
    bootstrap_service_account: str = "dagster-bootstrap"
    api_service_account: str = "pipelines-api"
    backup_retention_days: int = 14
    # ``owner/name`` of the repository whose pull-request plan check assumes PlanCheckRole via
    # GitHub's OIDC provider (already in the account), from its ``plan-check`` environment only
    github_repository: str = ""
    github_environment: str = "plan-check"

    @classmethod
    def from_node(cls, node: Any) -> DeploymentContext:
        def need(key: str) -> str:
            value = node.try_get_context(key)
            if value in (None, ""):
                raise ValueError(f"context {key!r} is required (cdk synth -c {key}=...)")
            return str(value)

        def listed(key: str) -> list[str]:
            value = node.try_get_context(key)
            items = value if isinstance(value, list) else str(need(key)).split(",")
            return [str(v).strip() for v in items if str(v).strip()]

        def optional(key: str, default: str) -> str:
            value = node.try_get_context(key)
            return default if value in (None, "") else str(value)

        return cls(
            deployment=optional("deployment", "prod"),
            lake_bucket=need("lake_bucket"),
            vpc_id=need("vpc_id"),
            vpc_cidr=need("vpc_cidr"),
            availability_zones=listed("availability_zones"),
            private_subnet_ids=listed("private_subnet_ids"),
            eks_cluster_name=need("eks_cluster_name"),
            eks_cluster_security_group_id=need("eks_cluster_security_group_id"),
            eks_oidc_issuer=need("eks_oidc_issuer").removeprefix("https://"),
            k8s_namespace=optional("k8s_namespace", "dagster"),
            service_account=optional("service_account", "dagster"),
            bootstrap_service_account=optional("bootstrap_service_account", "dagster-bootstrap"),
            api_service_account=optional("api_service_account", "pipelines-api"),
            backup_retention_days=int(optional("backup_retention_days", "14")),
            github_repository=optional("github_repository", ""),
            github_environment=optional("github_environment", "plan-check"),
        )

    @property
    def lake_prefix(self) -> str:
        return self.deployment

    def secret_name(self, suffix: str) -> str:
        return f"pipelines/{self.deployment}/{suffix}"


def _nag(construct: Construct, *reasons: tuple[str, str], applies_to: list[str] | None = None) -> None:
    """cdk-nag suppressions with their reason, next to the resource they are about."""
    NagSuppressions.add_resource_suppressions(
        construct,
        [NagPackSuppression(id=rid, reason=why, applies_to=applies_to) for rid, why in reasons],
        apply_to_children=True,
    )


def _checkov(construct: Construct, *reasons: tuple[str, str]) -> None:
    """checkov skips (id + comment) in the resource's CloudFormation metadata."""
    cfn = construct.node.default_child if not isinstance(construct, cdk.CfnResource) else construct
    assert isinstance(cfn, cdk.CfnResource)
    cfn.add_metadata("checkov", {"skip": [{"id": cid, "comment": why} for cid, why in reasons]})


def lifecycle_rules(lake_prefix: str) -> list[s3.LifecycleRule]:
    """``pipelines/platform/lifecycle_rules.yaml`` as CDK rules, with the IDs and prefixes of
    pipelines.platform.lifecycle."""
    out = []
    for rule in load_rules():
        abort = rule.get("abort_incomplete_multipart_upload_days")
        expiry = rule.get("expiration_days")
        noncurrent = rule.get("noncurrent_expiration_days")
        out.append(
            s3.LifecycleRule(
                id=f"pipelines:{lake_prefix}:{rule['id']}",
                prefix=f"{lake_prefix}/{rule['prefix']}",
                transitions=[
                    s3.Transition(
                        storage_class=s3.StorageClass(t["storage_class"]),
                        transition_after=cdk.Duration.days(t["days"]),
                    )
                    for t in rule.get("transitions", [])
                ]
                or None,
                expiration=cdk.Duration.days(expiry) if expiry else None,
                noncurrent_version_expiration=cdk.Duration.days(noncurrent) if noncurrent else None,
                abort_incomplete_multipart_upload_after=cdk.Duration.days(abort) if abort else None,
            )
        )
    return out


class PipelinesStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, ctx: DeploymentContext, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.ctx = ctx
        min_acu = cdk.CfnParameter(
            self,
            "MinAcu",
            type="Number",
            default=0.5,
            min_value=0.5,
            max_value=128,
            description="Aurora Serverless v2 minimum capacity (ACU)",
        )
        max_acu = cdk.CfnParameter(
            self,
            "MaxAcu",
            type="Number",
            default=8,
            min_value=1,
            max_value=128,
            description="Aurora Serverless v2 maximum capacity (ACU)",
        )
        vpc = ec2.Vpc.from_vpc_attributes(
            self,
            "Vpc",
            vpc_id=ctx.vpc_id,
            vpc_cidr_block=ctx.vpc_cidr,
            availability_zones=ctx.availability_zones,
            private_subnet_ids=ctx.private_subnet_ids,
        )
        eks_sg = ec2.SecurityGroup.from_security_group_id(
            self, "EksClusterSg", ctx.eks_cluster_security_group_id, mutable=False
        )
        private = ec2.SubnetSelection(subnets=vpc.private_subnets)

        # Keys: one for the lake, one for the metadata (database, secrets, backups, images).
        lake_key = kms.Key(self, "LakeKey", enable_key_rotation=True, description="pipelines lake SSE-KMS")
        data_key = kms.Key(self, "DataKey", enable_key_rotation=True, description="pipelines metadata")

        self.lake = self._lake_bucket(lake_key)
        secrets = self._secrets(data_key)
        self.secrets = secrets
        cluster, proxy, db_sg = self._database(
            vpc, private, eks_sg, data_key, secrets, min_acu.value_as_number, max_acu.value_as_number
        )
        self.cluster = cluster
        role = self._irsa_role(
            "DagsterRole",
            ctx.service_account,
            lake_key,
            data_key,
            [secrets[s] for s in ("db-dagster", "db-pipelines", "db-data-api", "shop-db-reader", "pii-salt")],
            lake_access=True,
        )
        bootstrap_role = self._irsa_role(
            "BootstrapRole",
            ctx.bootstrap_service_account,
            lake_key,
            data_key,
            [secrets[s] for s in ("db-admin", "db-dagster", "db-pipelines", "db-data-api")],
            lake_access=False,
        )
        # the data API (deploy/api): reads the marts' files, nothing else; its catalog login is a
        # Kubernetes secret of its own (a PostgreSQL role with SELECT only)
        api_role = self._irsa_role(
            "ApiRole", ctx.api_service_account, lake_key, data_key, [], lake_access=False
        )
        self._marts_read_policy(api_role, lake_key)
        plan_check_role = (
            self._plan_check_role(lake_key, data_key, [secrets["db-pipelines"], secrets["pii-salt"]])
            if ctx.github_repository
            else None
        )
        repo = self._ecr(data_key)
        self._backup(cluster, data_key)

        outputs = {
            "Region": cdk.Aws.REGION,
            "AccountId": cdk.Aws.ACCOUNT_ID,
            "LakeBucketName": self.lake.bucket_name,
            "LakeUri": f"s3://{ctx.lake_bucket}/{ctx.lake_prefix}",
            "LakeKeyArn": lake_key.key_arn,
            "AuroraEndpoint": cluster.cluster_endpoint.hostname,
            "RdsProxyEndpoint": proxy.endpoint,
            "DatabaseSecurityGroupId": db_sg.security_group_id,
            "DagsterRoleArn": role.role_arn,
            "DagsterRoleName": role.role_name,
            "BootstrapRoleArn": bootstrap_role.role_arn,
            "ApiRoleArn": api_role.role_arn,
            "EcrRepositoryUri": repo.repository_uri,
            "VpcCidr": ctx.vpc_cidr,
        }
        if plan_check_role is not None:
            outputs["PlanCheckRoleArn"] = plan_check_role.role_arn
        for suffix, secret in secrets.items():
            outputs["Secret" + "".join(p.title() for p in suffix.split("-"))] = secret.secret_name
        for key, value in outputs.items():
            cdk.CfnOutput(self, key, value=value)

    # ------------------------------------------------------------------------------------ S3
    def _lake_bucket(self, key: kms.Key) -> s3.Bucket:
        logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # the only encryption S3 log delivery supports
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=cdk.Duration.days(365),
                    noncurrent_version_expiration=cdk.Duration.days(7),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        _nag(
            logs, ("AwsSolutions-S1", "this is the access-log bucket of the lake; logging it to itself loops")
        )
        _checkov(
            logs,
            ("CKV_AWS_18", "this is the access-log bucket of the lake; logging it to itself loops"),
            ("CKV_AWS_145", "S3 server access log delivery supports SSE-S3 only, not SSE-KMS"),
        )
        bucket = s3.Bucket(
            self,
            "Lake",
            bucket_name=self.ctx.lake_bucket,
            versioned=True,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=logs,
            server_access_logs_prefix="lake/",
            lifecycle_rules=lifecycle_rules(self.ctx.lake_prefix),
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        return bucket

    # ------------------------------------------------------------------------------- secrets
    def _secrets(self, key: kms.Key) -> dict[str, sm.Secret]:
        def user_secret(cid: str, suffix: str, username: str) -> sm.Secret:
            return sm.Secret(
                self,
                cid,
                secret_name=self.ctx.secret_name(suffix),
                encryption_key=key,
                generate_secret_string=sm.SecretStringGenerator(
                    secret_string_template=cdk.Stack.of(self).to_json_string({"username": username}),
                    generate_string_key="password",
                    exclude_punctuation=True,
                    password_length=40,
                ),
            )

        secrets = {
            "db-admin": user_secret("DbAdminSecret", "db-admin", ADMIN_USER),
            "db-dagster": user_secret("DbDagsterSecret", "db-dagster", DB_USERS["dagster"]),
            "db-pipelines": user_secret("DbPipelinesSecret", "db-pipelines", DB_USERS["pipelines"]),
            "db-data-api": user_secret("DbDataApiSecret", "db-data-api", DB_USERS["data_api"]),
            "shop-db-reader": user_secret("ShopDbReaderSecret", "shop-db-reader", "pipelines_reader"),
            "pii-salt": sm.Secret(
                self,
                "PiiSaltSecret",
                secret_name=self.ctx.secret_name("pii-salt"),
                encryption_key=key,
                generate_secret_string=sm.SecretStringGenerator(exclude_punctuation=True, password_length=64),
            ),
        }
        no_rotation = {
            "db-dagster": "the Helm chart fixes the user name and long-lived pods read the password "
            "at start; "
            "rotated by putting a new value and re-running bootstrap-db (docs/production.md)",
            "db-pipelines": "SQLMesh/DuckLake read the password at pod start; rotated with bootstrap-db",
            "db-data-api": "read at API start; rotated with bootstrap-db (docs/production.md)",
            "shop-db-reader": "the shop database belongs to another team; they rotate it and "
            "update this secret",
            "pii-salt": "not a credential: changing the salt changes every masked value and breaks joins",
        }
        for suffix, why in no_rotation.items():
            _nag(secrets[suffix], ("AwsSolutions-SMG4", why))
            _checkov(secrets[suffix], ("CKV2_AWS_57", why))
        return secrets

    # ------------------------------------------------------------------------------ database
    def _database(
        self,
        vpc: ec2.IVpc,
        private: ec2.SubnetSelection,
        eks_sg: ec2.ISecurityGroup,
        key: kms.Key,
        secrets: dict[str, sm.Secret],
        min_acu: float,
        max_acu: float,
    ) -> tuple[rds.DatabaseCluster, rds.DatabaseProxy, ec2.SecurityGroup]:
        db_sg = ec2.SecurityGroup(
            self,
            "DatabaseSg",
            vpc=vpc,
            allow_all_outbound=False,
            description="Aurora: 5432 from the EKS cluster, the RDS Proxy and the rotation function only",
        )
        proxy_sg = ec2.SecurityGroup(
            self,
            "ProxySg",
            vpc=vpc,
            allow_all_outbound=False,
            description="RDS Proxy: 5432 from the EKS cluster only",
        )
        rotation_sg = ec2.SecurityGroup(
            self,
            "RotationSg",
            vpc=vpc,
            allow_all_outbound=False,
            description="admin secret rotation function",
        )
        db_sg.add_ingress_rule(eks_sg, ec2.Port.tcp(POSTGRES_PORT), "EKS cluster (pods)")
        db_sg.add_ingress_rule(proxy_sg, ec2.Port.tcp(POSTGRES_PORT), "RDS Proxy")
        db_sg.add_ingress_rule(rotation_sg, ec2.Port.tcp(POSTGRES_PORT), "secret rotation")
        proxy_sg.add_ingress_rule(eks_sg, ec2.Port.tcp(POSTGRES_PORT), "EKS cluster (pods)")
        proxy_sg.add_egress_rule(db_sg, ec2.Port.tcp(POSTGRES_PORT), "Aurora")
        rotation_sg.add_egress_rule(db_sg, ec2.Port.tcp(POSTGRES_PORT), "Aurora")
        rotation_sg.add_egress_rule(
            ec2.Peer.ipv4(self.ctx.vpc_cidr), ec2.Port.tcp(443), "Secrets Manager VPC endpoint"
        )

        params = rds.ParameterGroup(
            self,
            "ClusterParams",
            engine=rds.DatabaseClusterEngine.aurora_postgres(
                version=rds.AuroraPostgresEngineVersion.VER_17_7
            ),
            parameters={"rds.force_ssl": "1", "log_min_duration_statement": "5000"},
        )
        cluster = rds.DatabaseCluster(
            self,
            "Metadata",
            engine=rds.DatabaseClusterEngine.aurora_postgres(
                version=rds.AuroraPostgresEngineVersion.VER_17_7
            ),
            credentials=rds.Credentials.from_secret(secrets["db-admin"]),
            writer=rds.ClusterInstance.serverless_v2("writer", publicly_accessible=False),
            serverless_v2_min_capacity=min_acu,
            serverless_v2_max_capacity=max_acu,
            vpc=vpc,
            vpc_subnets=private,
            security_groups=[db_sg],
            port=POSTGRES_PORT,
            parameter_group=params,
            storage_encrypted=True,
            storage_encryption_key=key,
            iam_authentication=True,
            deletion_protection=True,
            backup=rds.BackupProps(retention=cdk.Duration.days(self.ctx.backup_retention_days)),
            cloudwatch_logs_exports=["postgresql"],
            monitoring_interval=cdk.Duration.seconds(60),
            copy_tags_to_snapshot=True,
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
        )
        # Minimum/maximum ACU stay the stack's parameters (the L2 keeps tokens as they are).
        _nag(
            cluster,
            (
                "AwsSolutions-RDS11",
                "5432 is what every PostgreSQL client here expects; "
                "the port is reachable only from the EKS cluster's SG",
            ),
        )
        _nag(
            cluster,
            (
                "AwsSolutions-IAM4",
                "AmazonRDSEnhancedMonitoringRole is the policy AWS documents for "
                "the enhanced monitoring role",
            ),
        )
        secrets["db-admin"].add_rotation_schedule(
            "AdminRotation",
            automatically_after=cdk.Duration.days(30),
            hosted_rotation=sm.HostedRotation.postgre_sql_single_user(
                vpc=vpc, vpc_subnets=private, security_groups=[rotation_sg]
            ),
        )
        proxy = cluster.add_proxy(
            "Proxy",
            secrets=[secrets["db-dagster"]],
            vpc=vpc,
            vpc_subnets=private,
            security_groups=[proxy_sg],
            require_tls=True,
            iam_auth=False,
            debug_logging=False,
        )
        target_group = proxy.node.find_child("ProxyTargetGroup")
        assert isinstance(target_group, cdk.CfnResource)
        # CDK adds an explicit DependsOn next to the Ref; harmless, and not ours to change.
        target_group.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        return cluster, proxy, db_sg

    # ----------------------------------------------------------------------------------- IAM
    def _irsa_role(
        self,
        cid: str,
        service_account: str,
        lake_key: kms.Key,
        data_key: kms.Key,
        secrets: list[sm.Secret],
        lake_access: bool,
    ) -> iam.Role:
        ctx = self.ctx
        issuer = ctx.eks_oidc_issuer
        role = self._web_identity_role(
            cid,
            f"IRSA role of {ctx.k8s_namespace}/{service_account} on {ctx.eks_cluster_name}",
            issuer,
            f"system:serviceaccount:{ctx.k8s_namespace}:{service_account}",
        )
        statements = (
            []
            if not secrets
            else [
                iam.PolicyStatement(
                    sid="NamedSecrets",
                    actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                    resources=[s.secret_arn for s in secrets],
                ),
                iam.PolicyStatement(
                    sid="SecretsKey",
                    actions=["kms:Decrypt"],
                    resources=[data_key.key_arn],
                    conditions={
                        "StringEquals": {"kms:ViaService": f"secretsmanager.{cdk.Aws.REGION}.amazonaws.com"}
                    },
                ),
            ]
        )
        if lake_access:
            prefix = ctx.lake_prefix
            statements += [
                iam.PolicyStatement(
                    sid="ListLakePrefix",
                    actions=["s3:ListBucket"],
                    resources=[self.lake.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
                ),
                iam.PolicyStatement(
                    sid="LakeObjects",
                    actions=[
                        "s3:GetObject",
                        "s3:PutObject",
                        "s3:DeleteObject",
                        "s3:AbortMultipartUpload",
                        "s3:ListMultipartUploadParts",
                    ],
                    resources=[self.lake.arn_for_objects(f"{prefix}/*")],
                ),
                iam.PolicyStatement(
                    sid="LakeKey",
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=[lake_key.key_arn],
                ),
            ]
        policy = iam.Policy(self, f"{cid}Policy", statements=statements) if statements else None
        if policy is not None:
            policy.attach_to_role(role)
        if lake_access and policy is not None:
            _nag(
                policy,
                ("AwsSolutions-IAM5", "objects under the lake prefix only: the pods write any key below it"),
                applies_to=[
                    f"Resource::<{self.get_logical_id(self.lake.node.default_child)}.Arn>/{ctx.lake_prefix}/*"
                ],
            )
        return role

    def _web_identity_role(self, cid: str, description: str, issuer: str, subject: str) -> iam.Role:
        """A role only ``subject`` of the OIDC provider ``issuer`` may assume, for an hour at most."""
        provider_arn = cdk.Fn.sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:oidc-provider/" + issuer)
        return iam.Role(
            self,
            cid,
            description=description,
            assumed_by=iam.FederatedPrincipal(
                provider_arn,
                conditions={"StringEquals": {f"{issuer}:sub": subject, f"{issuer}:aud": "sts.amazonaws.com"}},
                assume_role_action="sts:AssumeRoleWithWebIdentity",
            ),
            max_session_duration=cdk.Duration.hours(1),
        )

    def _plan_check_role(self, lake_key: kms.Key, data_key: kms.Key, secrets: list[sm.Secret]) -> iam.Role:
        """The pull-request plan check (``.github/workflows/ci.yml``): assumed with GitHub's OIDC
        token from the repository's protected environment only, for an hour at most. It reads the
        lake and the named secrets, and writes only new files under ``warehouse/`` (the branch
        environment's new table versions): no delete, nothing in the raw or landing zones."""
        ctx = self.ctx
        issuer = "token.actions.githubusercontent.com"
        role = self._web_identity_role(
            "PlanCheckRole",
            f"CI plan check of {ctx.github_repository} ({ctx.github_environment} environment)",
            issuer,
            f"repo:{ctx.github_repository}:environment:{ctx.github_environment}",
        )
        prefix = ctx.lake_prefix
        policy = iam.Policy(
            self,
            "PlanCheckRolePolicy",
            statements=[
                iam.PolicyStatement(
                    sid="NamedSecrets",
                    actions=["secretsmanager:GetSecretValue"],
                    resources=[s.secret_arn for s in secrets],
                ),
                iam.PolicyStatement(
                    sid="SecretsKey",
                    actions=["kms:Decrypt"],
                    resources=[data_key.key_arn],
                    conditions={
                        "StringEquals": {"kms:ViaService": f"secretsmanager.{cdk.Aws.REGION}.amazonaws.com"}
                    },
                ),
                *self._read_prefix_statements(prefix, list_sid="ListLakePrefix", read_sid="ReadLake"),
                iam.PolicyStatement(
                    sid="WriteNewTableFiles",
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[self.lake.arn_for_objects(f"{prefix}/warehouse/*")],
                ),
                iam.PolicyStatement(
                    sid="LakeKey",
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=[lake_key.key_arn],
                ),
            ],
        )
        policy.attach_to_role(role)
        lake = self.get_logical_id(self.lake.node.default_child)
        _nag(
            policy,
            ("AwsSolutions-IAM5", "read below the lake prefix, write new files below its warehouse/ only"),
            applies_to=[f"Resource::<{lake}.Arn>/{prefix}/*", f"Resource::<{lake}.Arn>/{prefix}/warehouse/*"],
        )
        return role

    def _read_prefix_statements(
        self, prefix: str, *, list_sid: str, read_sid: str
    ) -> list[iam.PolicyStatement]:
        """List and read the lake's objects below ``prefix`` and nothing else."""
        return [
            iam.PolicyStatement(
                sid=list_sid,
                actions=["s3:ListBucket"],
                resources=[self.lake.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
            ),
            iam.PolicyStatement(
                sid=read_sid, actions=["s3:GetObject"], resources=[self.lake.arn_for_objects(f"{prefix}/*")]
            ),
        ]

    def _marts_read_policy(self, role: iam.Role, lake_key: kms.Key) -> None:
        """Read-only access to the marts' data files: DuckLake keeps a table's files under
        ``<lake>/warehouse/<schema>/<table>/``, and the marts views read SQLMesh's
        ``sqlmesh__marts`` tables."""
        marts = f"{self.ctx.lake_prefix}/warehouse/{MARTS_PHYSICAL_SCHEMA}"
        policy = iam.Policy(
            self,
            "ApiRolePolicy",
            statements=[
                *self._read_prefix_statements(marts, list_sid="ListMartsPrefix", read_sid="MartsObjects"),
                iam.PolicyStatement(sid="LakeKey", actions=["kms:Decrypt"], resources=[lake_key.key_arn]),
            ],
        )
        policy.attach_to_role(role)
        _nag(
            policy,
            ("AwsSolutions-IAM5", "read-only, objects under the marts' warehouse prefix only"),
            applies_to=[f"Resource::<{self.get_logical_id(self.lake.node.default_child)}.Arn>/{marts}/*"],
        )

    # ------------------------------------------------------------------------- ECR, backups
    def _ecr(self, key: kms.Key) -> ecr.Repository:
        repo = ecr.Repository(
            self,
            "Images",
            repository_name=ECR_REPOSITORY,
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=key,
            lifecycle_rules=[ecr.LifecycleRule(description="keep the last 50 images", max_image_count=50)],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        return repo

    def _backup(self, cluster: rds.DatabaseCluster, key: kms.Key) -> None:
        vault = backup.BackupVault(self, "Vault", encryption_key=key, removal_policy=cdk.RemovalPolicy.RETAIN)
        plan = backup.BackupPlan(self, "Plan", backup_vault=vault)
        plan.add_rule(
            backup.BackupPlanRule(
                rule_name="daily-35d",
                schedule_expression=cdk.aws_events.Schedule.cron(hour="3", minute="0"),
                delete_after=cdk.Duration.days(35),
            )
        )
        plan.add_rule(
            backup.BackupPlanRule(
                rule_name="monthly-1y",
                schedule_expression=cdk.aws_events.Schedule.cron(day="1", hour="4", minute="0"),
                move_to_cold_storage_after=cdk.Duration.days(30),
                delete_after=cdk.Duration.days(365),
            )
        )
        selection = plan.add_selection(
            "Aurora", resources=[backup.BackupResource.from_rds_database_cluster(cluster)]
        )
        _nag(
            selection,
            (
                "AwsSolutions-IAM4",
                "AWSBackupServiceRolePolicyForBackup is the role AWS Backup documents for backup jobs",
            ),
        )
