"""``deploy/dagster-podman.yaml`` (the topology run here, docs/production.md "Run here as deployed")
is a valid instance config and differs from the production one only where the docs say.

Fast and offline; ``test_topology.py`` runs it for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipelines_tests.test_helm_values import (
    INSTANCE_ENV,
    PROD_INSTANCE,
    SECRET_ENV,
    _deployment,
    check_instance_config,
    instance_env,  # noqa: F401 -- fixture
    values,  # noqa: F401 -- fixture
)

PODMAN_INSTANCE = PROD_INSTANCE.with_name("dagster-podman.yaml")


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_the_podman_instance_file_is_valid(
    tmp_path: Path,
    instance_env: dict[str, str],  # noqa: F811
) -> None:
    loaded = check_instance_config(_load(PODMAN_INSTANCE), tmp_path)
    assert loaded["run_launcher"]["class"] == "DockerRunLauncher"
    assert loaded["compute_logs"]["class"] == "S3ComputeLogManager"
    assert set(INSTANCE_ENV) - {"DAGSTER_K8S_NAMESPACE"} <= set(loaded["run_launcher"]["config"]["env_vars"])


def test_it_differs_from_prod_only_in_the_launcher_tls_and_monitoring_interval() -> None:
    prod, podman = _load(PROD_INSTANCE), _load(PODMAN_INSTANCE)
    for key in ("scheduler", "run_coordinator", "concurrency", "compute_logs", "run_retries", "telemetry"):
        assert podman[key] == prod[key], key
    prod_db, podman_db = (
        prod["storage"]["postgres"]["postgres_db"],
        podman["storage"]["postgres"]["postgres_db"],
    )
    assert podman_db == {**prod_db, "params": {"sslmode": "prefer"}}
    assert podman["run_monitoring"] == {**prod["run_monitoring"], "poll_interval_seconds": 5,
                                        "max_resume_run_attempts": 0}  # fmt: skip
    assert prod["run_launcher"]["class"] == "K8sRunLauncher"


def test_runs_get_every_setting_the_chart_gives_run_pods_and_no_secret_value(
    values: dict[str, Any],  # noqa: F811
) -> None:
    """The chart's run pods inherit the code location's env and secrets; here the launcher's
    ``env_vars`` name them (values come from the daemon's environment, never from the file)."""
    launcher = _load(PODMAN_INSTANCE)["run_launcher"]["config"]
    names = set(launcher["env_vars"])
    assert all("=" not in name for name in names), "a value written into the instance file"
    chart = set(_deployment(values)["env"]) - {"DAGSTER_EVENT_BATCH_SIZE"}  # the image's ENV has it
    required_secrets = set(SECRET_ENV) - {"PIPELINES_ALERT_WEBHOOK_URL"}  # optional, unset here
    assert sorted((chart | required_secrets) - names) == []
    assert launcher["container_kwargs"]["network_mode"] == "host"
    assert launcher["container_kwargs"]["user"] == "10001:10001"
