"""The production deployment config, checked offline against the real schemas and Dagster itself.

* ``helm-values.yaml`` is merged onto the chart's defaults the way Helm merges (maps merge, lists
  replace, null deletes). The result is validated with the chart's own JSON schemas from
  ``pipelines_tests/data/helm`` (vendored; source, commits and license in its SOURCE.md). Remote
  Kubernetes ``$ref``s count as ``{}``: no network is needed, and Kubernetes-typed fields are not
  checked.
* The ``dagster.yaml`` the chart renders from those values, and ``deploy/dagster-prod.yaml``, go
  through Dagster's instance loader and each configured class's config schema. The prod file
  also opens a real PostgreSQL. The run pod the K8sRunLauncher would create is built by
  dagster-k8s's own code, so its resources, secrets and security context are checked too.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

from pipelines.platform.lake import Lake
from pipelines.platform.lifecycle import load_rules
from pipelines.platform.settings import Settings
from pipelines_tests.services import PostgresServer, S3Env

REPO = Path(__file__).resolve().parents[1]
CHART_DATA = Path(__file__).resolve().parent / "data" / "helm"  # vendored, see SOURCE.md there
HELM_VALUES = REPO / "helm-values.yaml"
PROD_INSTANCE = REPO / "deploy" / "dagster-prod.yaml"
DOCS = REPO / "docs" / "production.md"
RELEASE, NAMESPACE = "dagster", "dagster"  # as in docs/production.md
# The subchart's resource prefix: "<release>-<chart>" because the release name does not
# contain the chart name "dagster-user-deployments".
USER_DEPLOYMENTS_FULLNAME = f"{RELEASE}-dagster-user-deployments"

# The secret keys the code location needs (docs/production.md creates them).
# The webhook URL usually embeds a token: it is an (optional) key of the same secret.
SECRET_ENV = (
    "PIPELINES_PG_PASSWORD",
    "SHOP_DB_PASSWORD",
    "PIPELINES_PII_SALT",
    "PIPELINES_ALERT_WEBHOOK_URL",
)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _shared(name: str) -> Path:
    """A vendored chart file; missing is a failure, never a skip."""
    path = CHART_DATA / name
    assert path.is_file(), f"{path} is missing: the chart's schemas and defaults are vendored there"
    return path


def test_vendored_chart_files_match_their_recorded_checksums() -> None:
    import hashlib

    rows = re.findall(
        r"^\| `([^`]+)` \| `[^`]+` \| `[0-9a-f]{40}` \| (\d+) \| `([0-9a-f]{64})` \|$",
        (CHART_DATA / "SOURCE.md").read_text(),
        flags=re.M,
    )
    assert {name for name, _, _ in rows} == {p.name for p in CHART_DATA.iterdir() if p.name != "SOURCE.md"}
    for name, size, digest in rows:
        data = (CHART_DATA / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (int(size), digest), name


# ---------------------------------------------------------------------------- Helm semantics


def helm_merge(base: Any, override: Any) -> Any:
    """Helm's value coalescing: maps merge key by key, lists and scalars replace, null deletes."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _remote_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(("http://", "https://")):
            yield ref
        for value in node.values():
            yield from _remote_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _remote_refs(value)


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator that resolves every remote ``$ref`` (Kubernetes types) to ``{}``, offline.

    A ref like ``https://…/_definitions.json#/definitions/X`` needs a document in which that
    pointer exists, so each remote document is built with an empty schema at every pointer used.
    """
    documents: dict[str, dict[str, Any]] = {}
    for ref in _remote_refs(schema):
        uri, _, pointer = ref.partition("#")
        node = documents.setdefault(uri, {})
        for part in [p for p in pointer.split("/") if p]:
            node = node.setdefault(part, {})

    def retrieve(uri: str) -> Resource:
        if uri not in documents:
            raise NoSuchResource(ref=uri)
        return Resource.from_contents(documents[uri], default_specification=DRAFT202012)

    return Draft202012Validator(schema, registry=Registry(retrieve=retrieve))  # type: ignore[call-arg]


def schema_errors(schema_file: str, document: dict[str, Any]) -> list[str]:
    """Every violation, including the reasons inside ``anyOf`` branches, as ``path: message``."""
    schema = json.loads(_shared(schema_file).read_text())
    pending, out = list(validator(schema).iter_errors(document)), []
    while pending:
        error = pending.pop(0)
        out.append(f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}")
        pending.extend(error.context or [])
    return out


def merged_values(override: dict[str, Any] | None = None) -> dict[str, Any]:
    values = helm_merge(_load(_shared("dagster-values.yaml")), _load(HELM_VALUES))
    return helm_merge(values, override or {})


def subchart_values(values: dict[str, Any]) -> dict[str, Any]:
    """What the dagster-user-deployments subchart receives: its defaults, our block, the globals."""
    sub = helm_merge(_load(_shared("user-deployments-values.yaml")), values["dagster-user-deployments"])
    sub["global"] = helm_merge(sub.get("global", {}), values["global"])
    return sub


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return merged_values()


def _deployment(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def test_helm_merge_follows_helm() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": {"d": 1}}
    override = {"a": {"y": [3]}, "b": None, "c": {"e": 2}}
    assert helm_merge(base, override) == {"a": {"x": 1, "y": [3]}, "c": {"d": 1, "e": 2}}
    assert base["b"] == 2  # the defaults are not modified


def test_values_match_the_chart_schema(values: dict[str, Any]) -> None:
    assert schema_errors("dagster-values.schema.json", values) == []


def test_user_deployments_match_the_subchart_schema(values: dict[str, Any]) -> None:
    assert schema_errors("user-deployments-values.schema.json", subchart_values(values)) == []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"runLauncher": {"type": "Nope"}}, "'Nope' is not one of"),
        ({"dagsterDaemon": {"runCoordinater": {}}}, "Additional properties are not allowed"),
        (
            {"computeLogManager": {"config": {"s3ComputeLogManager": {"bucket": None}}}},
            "'bucket' is a required property",
        ),
    ],
)
def test_the_validator_rejects_bad_values(override: dict[str, Any], expected: str) -> None:
    errors = schema_errors("dagster-values.schema.json", merged_values(override))
    assert any(expected in e for e in errors), errors


def test_the_subchart_validator_rejects_a_deployment_without_port(values: dict[str, Any]) -> None:
    broken = copy.deepcopy(values)
    del _deployment(broken)["port"]
    errors = schema_errors("user-deployments-values.schema.json", subchart_values(broken))
    assert any("'port' is a required property" in e for e in errors), errors


# ---------------------------------------------------------------------------- code location


def test_code_location_serves_pipelines_definitions(values: dict[str, Any]) -> None:
    deployment = _deployment(values)
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == "pipelines.definitions"
    assert importlib.util.find_spec("pipelines.definitions") is not None
    exposed = re.findall(r"^EXPOSE\s+(\d+)", (REPO / "Dockerfile").read_text(), re.M)
    assert exposed == [str(deployment["port"])]


def test_one_image_runs_every_dagster_process(values: dict[str, Any]) -> None:
    image = _deployment(values)["image"]
    assert values["dagsterWebserver"]["image"] == image
    assert values["dagsterDaemon"]["image"] == image


def test_code_location_env_gives_prod_settings(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _deployment(values)["env"]
    assert all(isinstance(v, str) for v in env.values()), "ConfigMap values must be strings"
    leaked = [k for k in env if re.search(r"PASSWORD|SECRET|SALT|TOKEN|KEY", k)]
    assert leaked == [], f"secrets belong in envSecrets, not in env: {leaked}"
    assert _deployment(values)["envSecrets"] == [{"name": "pipelines-secrets"}]
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("<LAKE_BUCKET>", "acme-lake"))
    settings = Settings.from_env()
    assert settings.env == "prod" and settings.lake_is_s3
    assert settings.sqlmesh_gateway == "prod" and settings.demo_seed is False
    for name in (
        "PIPELINES_PG_HOST",
        "PIPELINES_PG_USER",
        "PIPELINES_DUCKLAKE_DB",
        "PIPELINES_SQLMESH_STATE_DB",
        "SHOP_DB_HOST",
        "SHOP_DB_NAME",
        "SHOP_DB_USER",
    ):
        assert env.get(name), f"{name} missing from the code location env"


ENV_NAME = re.compile(r"""["']((?:PIPELINES|SHOP|SQLMESH)_[A-Z0-9_]+)["']""")
# Read by the package but fine to leave unset in prod: each has a prod-safe default.
OPTIONAL_ENV = {
    "PIPELINES_DATA_DIR",
    "PIPELINES_DEMO_SEED",
    "PIPELINES_DEMO_SCALE",
    "PIPELINES_API_HOST",
    "PIPELINES_API_PORT",
    "PIPELINES_BRIDGE_CACHE_DIR",
    "PIPELINES_DUCKLAKE_SCHEMA",
    "PIPELINES_SQLMESH_STATE_SCHEMA",
    "SQLMESH_PROJECT_DIR",
    "PIPELINES_CATCH_UP_DAYS",
    "PIPELINES_CATCH_UP_GRACE_HOURS",
    "PIPELINES_DUCKLAKE_INLINE_ROWS",
    "PIPELINES_LANDING_MAX_OBJECTS",
    "PIPELINES_PROFILE",
    "PIPELINES_S3_CONNECT_TIMEOUT",
    "PIPELINES_S3_READ_TIMEOUT",
    "PIPELINES_S3_MAX_ATTEMPTS",
    "PIPELINES_PG_SSLMODE",  # require in prod
    "PIPELINES_SNAPSHOT_RETENTION_DAYS",  # 7
    "PIPELINES_MAX_RUN_HOURS",  # 24
    "PIPELINES_SHOP_DEFS",  # on with the bundled project
    "PIPELINES_GIT_COMMIT",  # set in the image at build time (release records)
    # the data API's own Deployment (deploy/api/), not the code location's
    "PIPELINES_API_CONNECTION_TTL",
    "PIPELINES_API_KEYS",
    "PIPELINES_API_KEYS_FILE",
    "PIPELINES_API_PG_USER",
    "PIPELINES_API_PG_PASSWORD",
    "PIPELINES_EVIDENCE",  # the optional Evidence site asset (off by default)
    # the CI plan check's secret ids (.github/workflows/ci.yml, pipelines/ops/ci_secrets.py)
    "PIPELINES_PG_SECRET_ID",
    "PIPELINES_PII_SALT_SECRET_ID",
}


def test_every_setting_the_package_reads_is_wired_for_prod(values: dict[str, Any]) -> None:
    """A new PIPELINES_*/SHOP_*/SQLMESH_* variable must be set here, be a documented secret,
    or be listed as optional."""
    read = {
        name
        for path in (REPO / "pipelines").rglob("*.py")
        if ".cache" not in path.parts
        for name in ENV_NAME.findall(path.read_text())
    }
    wired = set(_deployment(values)["env"]) | set(SECRET_ENV) | OPTIONAL_ENV
    assert sorted(read - wired) == []


def test_run_pods_keep_the_run_launcher_resources(values: dict[str, Any]) -> None:
    """With includeConfigInLaunchedRuns the chart copies a code location's ``resources`` into
    every run; they would silently replace runLauncher's."""
    deployment = _deployment(values)
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert not deployment.get("resources")
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["resources"]["limits"]["memory"]


def test_every_pod_uses_the_irsa_service_account(values: dict[str, Any]) -> None:
    assert values["global"]["serviceAccountName"] == values["serviceAccount"]["name"]
    assert values["serviceAccount"]["create"] is True
    role = values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.startswith("arn:aws:iam::")


def test_dagster_storage_uses_the_external_postgres_and_a_precreated_secret(
    values: dict[str, Any],
) -> None:
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"


# ---------------------------------------------------------------------------- PgBouncer sidecar

SIDECAR_PATCH = REPO / "deploy" / "pgbouncer-sidecar" / "sidecar-patch.yaml"
SIDECAR_KUSTOMIZATION = REPO / "deploy" / "pgbouncer-sidecar" / "kustomization.yaml"
SIDECAR_PORT = 6432


def _sidecar_config(values: dict[str, Any]) -> dict[str, str]:
    (config_map,) = [m for m in values["extraManifests"] if m["metadata"]["name"] == "pipelines-pgbouncer"]
    return dict(config_map["data"])


def _ini(text: str) -> dict[str, dict[str, str]]:
    """PgBouncer's ini as {section: {key: value}} (``;`` comments, values may contain ``=``)."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section][key.strip()] = value.strip()
    return out


def _sidecars(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in containers or [] if c.get("name") == "pgbouncer"]


def test_every_pod_kind_has_the_pgbouncer_sidecar(values: dict[str, Any]) -> None:
    """The code location, every run pod, the daemon and the webserver each run the same PgBouncer
    beside the app, as a native sidecar (an init container that keeps running, so a run's Job
    still completes), with its ConfigMap and a memory volume for the auth file."""
    deployment = _deployment(values)
    (sidecar,) = _sidecars(deployment["initContainers"])
    assert not deployment.get("sidecarContainers"), "a plain sidecar would keep a run's Job alive"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["/bin/sh", "/etc/pgbouncer/entrypoint.sh"]
    assert [p["containerPort"] for p in sidecar["ports"]] == [SIDECAR_PORT]
    volumes = {v["name"]: v for v in deployment["volumes"]}
    assert volumes["pgbouncer-config"]["configMap"]["name"] == "pipelines-pgbouncer"
    assert volumes["pgbouncer-run"]["emptyDir"]["medium"] == "Memory"
    assert {m["name"] for m in sidecar["volumeMounts"]} == set(volumes)
    # run pods: the launcher's own config (runs get it even without includeConfigInLaunchedRuns)
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert _sidecars(k8s["runK8sConfig"]["podSpecConfig"]["initContainers"]) == [sidecar]
    assert k8s["volumes"] == deployment["volumes"]
    # daemon and webserver: the post-renderer's patch, selected by the chart's component labels
    patch = _load(SIDECAR_PATCH)
    pod = patch["spec"]["template"]["spec"]
    assert _sidecars(pod["initContainers"]) == [sidecar] and pod["volumes"] == deployment["volumes"]
    kustomization = _load(SIDECAR_KUSTOMIZATION)
    targets = {
        p["target"]["labelSelector"] for p in kustomization["patches"] if p["path"] == SIDECAR_PATCH.name
    }
    assert targets == {"component=dagster-daemon", "component=dagster-webserver"}
    # its secrets are the ones the apps use, from the same Kubernetes secrets
    refs = {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in sidecar["env"]
        if "valueFrom" in e
    }
    assert refs == {
        "DAGSTER_PG_PASSWORD": (values["global"]["postgresqlSecretName"], "postgresql-password"),
        "PIPELINES_PG_PASSWORD": ("pipelines-secrets", "PIPELINES_PG_PASSWORD"),
        "SHOP_DB_PASSWORD": ("pipelines-secrets", "SHOP_DB_PASSWORD"),
    }
    assert not [e for e in sidecar["env"] if re.search("PASSWORD", e["name"]) and "value" in e]


def test_the_apps_reach_postgres_only_through_the_sidecar_on_the_loopback(values: dict[str, Any]) -> None:
    """Dagster's storage, SQLMesh state, DuckLake's catalog and the shop DB all point at the
    sidecar on 127.0.0.1; only the sidecar knows the servers, and it speaks TLS to them."""
    pg, env = values["postgresql"], _deployment(values)["env"]
    assert (pg["postgresqlHost"], pg["service"]["port"]) == ("127.0.0.1", SIDECAR_PORT)
    assert pg["postgresqlParams"]["sslmode"] == "disable"  # loopback: TLS would cost a handshake per login
    assert _pg_storage(values)["postgres_db"]["hostname"] == "127.0.0.1"
    assert (env["PIPELINES_PG_HOST"], env["PIPELINES_PG_PORT"]) == ("127.0.0.1", str(SIDECAR_PORT))
    assert (env["SHOP_DB_HOST"], env["SHOP_DB_PORT"]) == ("127.0.0.1", str(SIDECAR_PORT))
    assert env["PIPELINES_PG_SSLMODE"] == "disable"
    ini = _ini(_sidecar_config(values)["pgbouncer.ini"])
    bouncer = ini["pgbouncer"]
    # trust is only safe because nothing outside the pod reaches the listener
    assert bouncer["auth_type"] == "trust"
    assert bouncer["listen_addr"] == "127.0.0.1" and bouncer["unix_socket_dir"] == ""
    assert bouncer["listen_port"] == str(SIDECAR_PORT)
    assert bouncer["pool_mode"] == "session"  # the plan and model locks are session advisory locks
    assert bouncer["server_tls_sslmode"] in ("require", "verify-ca", "verify-full")
    assert bouncer["auth_file"].startswith("/run/pgbouncer/")
    assert int(bouncer["default_pool_size"]) <= 10 and int(bouncer["max_db_connections"]) <= 10
    # every database the apps name, on a server that is not the loopback
    databases = {name: dict(p.split("=", 1) for p in spec.split()) for name, spec in ini["databases"].items()}
    wanted = {
        pg["postgresqlDatabase"]: "<RDS_PROXY_ENDPOINT>",
        env["PIPELINES_SQLMESH_STATE_DB"]: "<AURORA_ENDPOINT>",
        env["PIPELINES_DUCKLAKE_DB"]: "<AURORA_ENDPOINT>",
        env["SHOP_DB_NAME"]: "<SHOP_DB_HOST>",
    }
    assert {name: d["host"] for name, d in databases.items()} == wanted
    assert all(d["dbname"] == name for name, d in databases.items())
    # the users the sidecar logs in as upstream are the apps' own
    (sidecar,) = _sidecars(_deployment(values)["initContainers"])
    users = {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}
    assert users == {
        "DAGSTER_PG_USER": pg["postgresqlUsername"],
        "PIPELINES_PG_USER": env["PIPELINES_PG_USER"],
        "SHOP_DB_USER": env["SHOP_DB_USER"],
    }
    entrypoint = _sidecar_config(values)["entrypoint.sh"]
    for name in users:
        assert f'"${name}"' in entrypoint, name


# ---------------------------------------------------------------------------- dagster.yaml


def _pg_storage(values: dict[str, Any]) -> dict[str, Any]:
    pg = values["postgresql"]
    username: Any = pg["postgresqlUsername"]
    if values["global"].get("postgresqlSecretUsernameKey"):
        username = {"env": "DAGSTER_PG_USERNAME"}
    return {
        "postgres_db": {
            "username": username,
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": pg["postgresqlHost"],
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg["postgresqlParams"],
            **({"scheme": pg["postgresqlScheme"]} if pg.get("postgresqlScheme") else {}),
        }
    }


_K8S_OPTIONAL = {
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "resources": "resources",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
}
_RUN_K8S = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def render_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The ``dagster.yaml`` the chart's configmap-instance template renders from ``values``.

    Only the template branches these values take: postgres storage, the K8sRunLauncher,
    the QueuedRunCoordinator and S3 compute logs.
    """
    g, daemon = values["global"], values["dagsterDaemon"]
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": g["serviceAccountName"] or values["serviceAccount"]["name"],
        "dagster_home": g["dagsterHome"],
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": g["postgresqlSecretName"],
    }
    for key, name in (("envConfigMaps", "env_config_maps"), ("envSecrets", "env_secrets")):
        if k8s.get(key):
            launcher[name] = [item["name"] for item in k8s[key]]
    launcher.update({name: k8s[key] for key, name in _K8S_OPTIONAL.items() if k8s.get(key)})
    if k8s.get("runK8sConfig"):
        launcher["run_k8s_config"] = {
            name: k8s["runK8sConfig"][key] for key, name in _RUN_K8S.items() if k8s["runK8sConfig"].get(key)
        }
    qrc = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator_config = {
        name: qrc[key]
        for key, name in (
            ("maxConcurrentRuns", "max_concurrent_runs"),
            ("tagConcurrencyLimits", "tag_concurrency_limits"),
            ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
        )
        if qrc.get(key)
    }
    s3_logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    logs_config = {
        name: s3_logs[key]
        for key, name in (
            ("bucket", "bucket"),
            ("prefix", "prefix"),
            ("skipEmptyFiles", "skip_empty_files"),
            ("endpointUrl", "endpoint_url"),
        )
        if s3_logs.get(key)
    }
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    storage = _pg_storage(values)
    instance: dict[str, Any] = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": storage,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": coordinator_config,
        },
        "compute_logs": {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": "S3ComputeLogManager",
            "config": logs_config,
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            **(
                {"free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"]}
                if monitoring.get("freeSlotsAfterRunEndSeconds")
                else {}
            ),
            **(
                {"max_resume_run_attempts": monitoring["maxResumeRunAttempts"]}
                if monitoring.get("maxResumeRunAttempts")
                else {}
            ),
        },
        "run_retries": {
            "enabled": retries["enabled"],
            **({"max_retries": retries["maxRetries"]} if retries.get("maxRetries") else {}),
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    assert daemon["enabled"] and daemon["runCoordinator"]["enabled"]
    instance.update(values.get("additionalInstanceConfig") or {})
    return instance


INSTANCE_ENV = {
    "DAGSTER_PG_HOST": "db.example.internal",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "dummy-test-password",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_COMPUTE_LOGS_BUCKET": "acme-lake",
    "DAGSTER_COMPUTE_LOGS_PREFIX": "prod/dagster-logs",
    "DAGSTER_K8S_NAMESPACE": NAMESPACE,
}


def check_instance_config(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Load ``config`` with Dagster's instance loader, then check each class's own config.

    The loader checks the top level (e.g. run limits that conflict with pools). Each configured
    class's ``config_type()`` checks the nested config and resolves every ``env:`` value.
    """
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    home = tmp_path / f"home-{uuid.uuid4().hex[:8]}"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    loaded, _ = dagster_instance_config(str(home))
    sections = {k: v for k, v in loaded.items() if isinstance(v, dict) and "class" in v}
    if "storage" in loaded:
        sections["storage"] = {
            "module": "dagster_postgres",
            "class": "DagsterPostgresStorage",
            "config": loaded["storage"]["postgres"],
        }
    for name, section in sections.items():
        cls: Any = class_from_code_pointer(section["module"], section["class"])
        result = process_config(cls.config_type(), section.get("config") or {})
        assert result.success, f"{name}: {[e.message for e in result.errors or []]}"
    return loaded


@pytest.fixture
def instance_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in INSTANCE_ENV.items():
        monkeypatch.setenv(name, value)
    return INSTANCE_ENV


def test_the_chart_renders_a_valid_dagster_instance(
    values: dict[str, Any], tmp_path: Path, instance_env: dict[str, str]
) -> None:
    loaded = check_instance_config(render_instance(values), tmp_path)
    assert loaded["concurrency"]["pools"]["default_limit"] >= 1
    assert loaded["run_monitoring"]["enabled"] and loaded["run_retries"]["enabled"]


def test_run_limits_in_the_coordinator_conflict_with_pools(
    values: dict[str, Any], tmp_path: Path, instance_env: dict[str, str]
) -> None:
    """Why the run limits sit under ``concurrency.runs``: Dagster refuses the old place."""
    from dagster._core.errors import DagsterInvalidConfigError

    qrc = {"queuedRunCoordinator": {"tagConcurrencyLimits": [{"key": "a", "limit": 1}]}}
    moved = merged_values({"dagsterDaemon": {"runCoordinator": {"config": qrc}}})
    with pytest.raises(DagsterInvalidConfigError, match="tag_concurrency_limits"):
        check_instance_config(render_instance(moved), tmp_path)


def test_the_prod_instance_file_is_valid(tmp_path: Path, instance_env: dict[str, str]) -> None:
    loaded = check_instance_config(_load(PROD_INSTANCE), tmp_path)
    assert loaded["run_launcher"]["class"] == "K8sRunLauncher"
    assert loaded["compute_logs"]["class"] == "S3ComputeLogManager"


def test_the_prod_instance_file_matches_the_chart(values: dict[str, Any]) -> None:
    rendered, prod = render_instance(values), _load(PROD_INSTANCE)
    for key in ("concurrency", "run_retries", "telemetry", "scheduler"):
        assert prod[key] == rendered[key], key
    monitoring_keys = ("enabled", "start_timeout_seconds", "poll_interval_seconds")
    for key in (*monitoring_keys, "free_slots_after_run_end_seconds"):
        assert prod["run_monitoring"][key] == rendered["run_monitoring"][key], key
    ours, theirs = prod["run_launcher"]["config"], rendered["run_launcher"]["config"]
    for key in (
        "env_secrets",
        "resources",
        "security_context",
        "run_k8s_config",
        "volumes",
        "service_account_name",
        "instance_config_map",
        "postgres_password_secret",
        "dagster_home",
        "image_pull_policy",
        "fail_pod_on_run_failure",
    ):
        assert ours[key] == theirs[key], key
    assert (
        prod["run_coordinator"]["config"]["dequeue_interval_seconds"]
        == (rendered["run_coordinator"]["config"]["dequeue_interval_seconds"])
    )
    storage = _pg_storage(values)["postgres_db"]
    assert prod["storage"]["postgres"]["postgres_db"]["scheme"] == storage["scheme"]
    # the pods reach the sidecar on the loopback; this file serves processes outside the pods,
    # which connect to the server (RDS Proxy) themselves, with TLS
    assert storage["params"] == {"sslmode": "disable"}
    assert prod["storage"]["postgres"]["postgres_db"]["params"] == {"sslmode": "require"}
    logs = rendered["compute_logs"]["config"]
    assert INSTANCE_ENV["DAGSTER_COMPUTE_LOGS_PREFIX"] == logs["prefix"]


def test_compute_logs_live_in_the_lake_and_expire(values: dict[str, Any]) -> None:
    lake = Lake(_deployment(values)["env"]["PIPELINES_LAKE_URI"])
    logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert logs["bucket"] == lake.bucket
    assert logs["prefix"].startswith(lake.prefix + "/")
    zone = logs["prefix"][len(lake.prefix) + 1 :].rstrip("/") + "/"
    expiring = {r["prefix"] for r in load_rules() if r.get("expiration_days")}
    assert zone in expiring, f"no lifecycle rule expires {zone}"


def test_the_run_pod_dagster_k8s_would_create(values: dict[str, Any], tmp_path: Path) -> None:
    """dagster-k8s merges the launcher config with the code location's container context (as the
    chart writes it) and builds the Job. The pod must keep the launcher's resources, the
    secrets, the IRSA service account and the non-root security context."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job
    from dagster_k8s.launcher import K8sRunLauncher

    config = render_instance(values)["run_launcher"]["config"]
    kubeconfig = tmp_path / "kubeconfig"  # parsed, never contacted
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "t",
                "clusters": [{"name": "t", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "t", "user": {"token": "x"}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
            }
        )
    )
    launcher = K8sRunLauncher(
        **{**config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    )
    deployment = _deployment(values)
    # dagsterUserDeployments.k8sContainerContext, for these values.
    container_context = {
        "k8s": {
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "env_config_maps": [f"{USER_DEPLOYMENTS_FULLNAME}-{deployment['name']}-user-env"],
            "env_secrets": [s["name"] for s in deployment["envSecrets"]],
            "namespace": NAMESPACE,
            "service_account_name": values["global"]["serviceAccountName"],
            **({"resources": deployment["resources"]} if deployment.get("resources") else {}),
            **({"volumes": deployment["volumes"]} if deployment.get("volumes") else {}),
            "run_k8s_config": {
                "pod_spec_config": {
                    "automount_service_account_token": True,
                    **(
                        {"init_containers": deployment["initContainers"]}
                        if deployment.get("initContainers")
                        else {}
                    ),
                }
            },
        }
    }
    image = "{repository}:{tag}".format(**deployment["image"])
    origin = JobPythonOrigin(
        "daily",
        RepositoryPythonOrigin(
            executable_path="python",
            code_pointer=ModuleCodePointer("pipelines.definitions", "defs", str(REPO)),
            container_image=image,
            container_context=container_context,
        ),
    )
    run = DagsterRun(job_name="daily", run_id=str(uuid.uuid4()), job_code_origin=origin)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = construct_dagster_k8s_job(
        context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        ["dagster", "api", "execute_run"],
        "dagster-run-test",
        user_defined_k8s_config=context.run_k8s_config,
    )
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == image
    assert container.resources.limits["memory"] == "8Gi"
    assert container.resources.requests["cpu"] == "1"
    assert container.security_context.allow_privilege_escalation is False
    assert pod.security_context.run_as_user == 10001 and pod.security_context.run_as_non_root
    assert pod.service_account_name == "dagster"
    env_from = {(e.secret_ref or e.config_map_ref).name for e in container.env_from}
    assert {"pipelines-secrets", f"{USER_DEPLOYMENTS_FULLNAME}-pipelines-user-env"} <= env_from
    password = next(e for e in container.env if e.name == "DAGSTER_PG_PASSWORD")
    assert password.value_from.secret_key_ref.name == "dagster-postgresql-secret"
    # one PgBouncer sidecar, from the launcher and the code location alike (dagster-k8s merges
    # the two identical copies), and each volume once (Kubernetes refuses duplicate names)
    (sidecar,) = [c for c in pod.init_containers or [] if c.name == "pgbouncer"]
    assert sidecar.restart_policy == "Always" and sidecar.ports[0].container_port == 6432
    assert sorted(v.name for v in pod.volumes) == ["pgbouncer-config", "pgbouncer-run"]
    assert sidecar.env[1].value_from.secret_key_ref.name == "dagster-postgresql-secret"


def test_the_prod_instance_runs_on_a_real_postgres(
    postgres_server: PostgresServer,
    s3_env: S3Env,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dagster's storage comes up from deploy/dagster-prod.yaml, and the per-pool limits are set
    with the exact command docs/production.md gives."""
    import dagster as dg
    from click.testing import CliRunner
    from dagster._cli.instance import instance_cli

    database = postgres_server.create_database()
    env = {
        **INSTANCE_ENV,
        "DAGSTER_PG_HOST": postgres_server.host,
        "DAGSTER_PG_PORT": str(postgres_server.port),
        "DAGSTER_PG_USERNAME": postgres_server.user,
        "DAGSTER_PG_PASSWORD": postgres_server.password,
        "DAGSTER_PG_DB": database,
        "DAGSTER_COMPUTE_LOGS_BUCKET": s3_env.bucket,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = _load(PROD_INSTANCE)
    config["storage"]["postgres"]["postgres_db"]["params"] = {}  # the test server has no TLS
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    commands = re.findall(r"dagster instance concurrency set (\w+) (\d+)", DOCS.read_text())
    assert {pool for pool, _ in commands} >= {"sqlmesh", "ingestion"}
    for pool, limit in commands:
        result = CliRunner().invoke(instance_cli, ["concurrency", "set", pool, limit])
        assert result.exit_code == 0, "".join(traceback.format_exception(*result.exc_info))

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_runs() == []
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
        for pool, limit in commands:
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == int(limit)
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
    with postgres_server.connect(database) as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'")
        assert cur.fetchone() == (1,)
    con.close()


# ---------------------------------------------------------------------------- docs


def test_docs_explain_every_placeholder_and_secret() -> None:
    if not DOCS.exists():
        pytest.fail(f"{DOCS} is missing")
    docs = DOCS.read_text()
    placeholders = set(re.findall(r"<[A-Z_]+>", HELM_VALUES.read_text()))
    assert placeholders, "helm-values.yaml should mark what each deployment fills in"
    assert sorted(p for p in placeholders if p not in docs) == []
    for key in (*SECRET_ENV, "postgresql-password", "pipelines-secrets", "dagster-postgresql-secret"):
        assert key in docs, key
    assert "helm repo add dagster https://dagster-io.github.io/helm" in docs
    assert "helm upgrade --install dagster dagster/dagster" in docs
    assert "python -m pipelines.platform.lifecycle" in docs
