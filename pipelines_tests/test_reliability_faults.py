"""S3 faults during ingestion: transient ones are absorbed, persistent ones fail cleanly.

The S3 endpoint is moto behind :mod:`pipelines_tests.fault_proxy`, which returns 5xx, delays
past the client timeout or resets connections on a schedule. ``AWS_ENDPOINT_URL`` points at the
proxy, so boto3 (``pipelines.platform.lake``) and DuckDB httpfs go through it like they would go through
a flaky network to real S3.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import types
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from boto3.exceptions import S3UploadFailedError

from pipelines.platform.duckdb_s3 import configure_s3
from pipelines.platform.lake import Lake, s3_config
from pipelines.shop.sources.contracts import CONTRACTS
from pipelines.shop.sources.readers import ingest_files
from pipelines_tests.conftest import Deployment
from pipelines_tests.fault_proxy import FaultProxy, running_proxy
from pipelines_tests.services import S3Env
from pipelines_tests.test_reliability_input import GOOD_EVENT

DAY = "2026-05-04"  # the day of GOOD_EVENT (test_reliability_input)
ORDERS = dg.AssetKey(["raw", "orders"])
RAW_KEY = f"raw/orders/ds={DAY}/data.parquet"
RAW_PUT = r"/lake/raw/orders/"
# DuckDB percent-encodes "=" in object paths, boto3 does not
DS1, DS2 = r"/lake/raw/t/ds(=|%3D)2026-01-01/", r"/lake/raw/t/ds(=|%3D)2026-01-02/"


@pytest.fixture
def proxy(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """moto behind the fault proxy; the lake is ``s3://<bucket>/lake`` reached through the proxy."""
    with running_proxy(s3_env.endpoint_url) as fault_proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
        monkeypatch.setenv("PIPELINES_LAKE_URI", s3_env.uri("lake"))
        yield fault_proxy


def lake_objects(s3_env: S3Env) -> dict[str, bytes]:
    """Every object of the bucket, read directly from moto (not through the proxy)."""
    client = s3_env.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_env.bucket).get("Contents", [])]
    return {k: client.get_object(Bucket=s3_env.bucket, Key=k)["Body"].read() for k in sorted(keys)}


def wipe(s3_env: S3Env) -> None:
    client = s3_env.client()
    for key in lake_objects(s3_env):
        client.delete_object(Bucket=s3_env.bucket, Key=key)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        str(e.event_specific_data.error.to_string() if e.event_specific_data.error else "")
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    )


def short_read_timeout(monkeypatch: pytest.MonkeyPatch, retries: int = 8) -> None:
    """A 1 s read timeout (30 s by default) and ``retries`` after the first try, through the
    settings production has, so the faults stay short."""
    monkeypatch.setenv("PIPELINES_S3_READ_TIMEOUT", "1")
    monkeypatch.setenv("PIPELINES_S3_MAX_ATTEMPTS", str(1 + retries))


def test_transient_faults_are_retried_and_change_nothing(
    deployment: Deployment, proxy: FaultProxy, s3_env: S3Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """503s, a 500, a connection reset and a PUT slower than the read timeout: same bytes in the end."""
    short_read_timeout(monkeypatch)
    undisturbed = deployment.run([ORDERS], start=DAY)
    assert undisturbed.success
    expected = lake_objects(s3_env)
    assert f"lake/{RAW_KEY}" in expected and expected[f"lake/{RAW_KEY}"][:4] == b"PAR1"
    assert set(proxy.outcomes()) == {"pass"}

    wipe(s3_env)
    proxy.clear()
    proxy.add("status", times=3, methods="PUT", path=RAW_PUT, status=503)
    proxy.add("status", times=1, methods="HEAD", status=500)
    proxy.add("reset", times=1, methods="PUT", path=RAW_PUT)
    proxy.add("delay", times=1, methods="PUT", path=RAW_PUT, delay=2.5)  # the server gets it late
    result = deployment.run([ORDERS], start=DAY)

    assert result.success, failure_text(result)
    # the faults really happened, and the client retried through them
    assert proxy.outcomes("PUT", RAW_PUT) == ["status:503"] * 3 + ["reset", "delay", "pass"]
    assert proxy.outcomes("HEAD")[:2] == ["status:500", "pass"]
    # one Dagster attempt was enough: botocore absorbed every fault
    assert len(result.get_step_success_events()) == 1
    assert not [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert lake_objects(s3_env) == expected  # same keys, byte-identical Parquet


def assert_fails_cleanly(result: dg.ExecuteInProcessResult, s3_env: S3Env) -> str:
    assert not result.success
    text = failure_text(result)
    assert "PutObject" in text and "reached max retries" in text, text[-2000:]
    assert "InternalError" in text or "ServiceUnavailable" in text
    assert RAW_KEY.split("/")[1] in text or "data.parquet" in text or "upload" in text.lower()
    keys = list(lake_objects(s3_env))
    # nothing half-written: no raw partition, no temporary or partial objects anywhere
    assert not [k for k in keys if k.startswith("lake/raw/")], keys
    assert not [k for k in keys if ".tmp" in k or k.rsplit("/", 1)[-1].startswith(".")], keys
    uploads = s3_env.client().list_multipart_uploads(Bucket=s3_env.bucket).get("Uploads", [])
    assert uploads == []
    return text


def test_persistent_outage_fails_with_a_clear_message_and_writes_nothing(
    deployment: Deployment, proxy: FaultProxy, s3_env: S3Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every PUT under raw/ fails; boto3 gives up, Dagster's retry policy tries again, then fails.

    The client's retry budget is cut to 2 retries (PIPELINES_S3_MAX_ATTEMPTS=3) so the test
    runs in seconds; the slow variant below keeps the production budget.
    """
    short_read_timeout(monkeypatch, retries=2)
    proxy.add("status", times=None, methods="PUT", path=RAW_PUT, status=500)
    result = deployment.run([ORDERS], start=DAY)
    assert_fails_cleanly(result, s3_env)
    puts = proxy.outcomes("PUT", RAW_PUT)
    attempts = 1 + len([e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"])
    assert attempts == 4  # the asset's RetryPolicy: 3 retries
    assert puts == ["status:500"] * (3 * attempts)  # 1 try + 2 retries per step attempt

    # once S3 is back, the same run succeeds
    proxy.clear()
    assert deployment.run([ORDERS], start=DAY).success
    assert Lake(s3_env.uri("lake"), client=s3_env.client()).exists(RAW_KEY)


@pytest.mark.slow
def test_persistent_outage_with_the_production_retry_budget(
    deployment: Deployment, proxy: FaultProxy, s3_env: S3Env
) -> None:
    proxy.add("status", times=None, methods="PUT", path=RAW_PUT, status=503)
    started = time.monotonic()
    result = deployment.run([ORDERS], start=DAY)
    elapsed = time.monotonic() - started
    assert_fails_cleanly(result, s3_env)
    assert len(proxy.outcomes("PUT", RAW_PUT)) == 4 * 9  # 4 step attempts x (1 + 8 retries)
    print(f"persistent S3 outage: run failed after {elapsed:.1f}s")


def test_duckdb_httpfs_reads_through_transient_faults(
    proxy: FaultProxy, s3_env: S3Env, tmp_path: Path
) -> None:
    """The SQLMesh side reads raw Parquet over httpfs: one 503 and one reset do not fail a query."""
    lake = Lake(s3_env.uri("lake"), client=s3_env.client())
    source = tmp_path / "data.parquet"
    duckdb.execute(f"COPY (SELECT range AS id FROM range(1000)) TO '{source}' (FORMAT parquet)")
    for day in ("2026-01-01", "2026-01-02"):
        lake.put_file(source, f"raw/t/ds={day}/data.parquet")
    con = duckdb.connect()
    configure_s3(con)
    con.execute("SET enable_external_file_cache = false")

    proxy.add("status", times=1, path=DS1, status=503)
    proxy.add("reset", times=1, methods="GET", path=DS1)
    url = lake.url("raw/t/ds=2026-01-01/data.parquet")
    assert con.execute(f"SELECT count(*), sum(id) FROM read_parquet('{url}')").fetchone() == (1000, 499500)
    outcomes = proxy.outcomes(path=DS1)
    assert outcomes[0] == "status:503" and "reset" in outcomes, outcomes

    proxy.add("status", times=None, path=DS2, status=503)
    url = lake.url("raw/t/ds=2026-01-02/data.parquet")
    with pytest.raises(duckdb.Error) as failure:
        con.execute(f"SELECT count(*) FROM read_parquet('{url}')").fetchone()
    message = str(failure.value)
    assert "503" in message and "raw/t/ds" in message, message
    con.close()


# ---------------------------------------------------------------------------- S3 client settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIPELINES_S3_MAX_ATTEMPTS", "0"),
        ("PIPELINES_S3_MAX_ATTEMPTS", "2.5"),
        ("PIPELINES_S3_MAX_ATTEMPTS", "three"),
        ("PIPELINES_S3_READ_TIMEOUT", "-1"),
        ("PIPELINES_S3_READ_TIMEOUT", "nan"),
        ("PIPELINES_S3_CONNECT_TIMEOUT", "inf"),
        ("PIPELINES_S3_CONNECT_TIMEOUT", "5s"),
    ],
)
def test_a_bad_s3_setting_fails_naming_the_variable(
    s3_env: S3Env, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=rf"{name} must be .*got {value!r}"):
        Lake(s3_env.uri("lake")).exists("anything")


def test_s3_settings_defaults_and_values() -> None:
    default = s3_config({})
    assert (default.retries, default.connect_timeout, default.read_timeout) == (
        {"mode": "standard", "total_max_attempts": 9},
        5.0,
        30.0,
    )
    names = ("PIPELINES_S3_MAX_ATTEMPTS", "PIPELINES_S3_CONNECT_TIMEOUT", "PIPELINES_S3_READ_TIMEOUT")
    config = s3_config(dict(zip(names, (" 4 ", "0.5", "2"), strict=True)))
    assert config.retries["total_max_attempts"] == 4
    assert (config.connect_timeout, config.read_timeout) == (0.5, 2.0)


def test_the_configured_attempt_budget_is_what_the_client_uses(
    proxy: FaultProxy, s3_env: S3Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIPELINES_S3_MAX_ATTEMPTS counts the first try: 1 lets a single 503 fail, 3 absorbs two."""
    monkeypatch.setenv("PIPELINES_S3_MAX_ATTEMPTS", "1")
    proxy.add("status", times=1, methods="PUT", path=r"/lake/budget/", status=503)
    with pytest.raises(S3UploadFailedError, match="ServiceUnavailable"):
        Lake(s3_env.uri("lake")).put_bytes(b"one", "budget/a.bin")
    assert proxy.outcomes("PUT", r"/lake/budget/") == ["status:503"]

    proxy.clear()
    monkeypatch.setenv("PIPELINES_S3_MAX_ATTEMPTS", "3")
    proxy.add("status", times=2, methods="PUT", path=r"/lake/budget/", status=503)
    lake = Lake(s3_env.uri("lake"))
    lake.put_bytes(b"three", "budget/a.bin")
    assert proxy.outcomes("PUT", r"/lake/budget/") == ["status:503", "status:503", "pass"]
    assert lake.get_bytes("budget/a.bin") == b"three"


# ---------------------------------------------------------------------------- publish order

WEB = CONTRACTS["web_events"]


def test_a_failed_data_upload_leaves_no_quarantine_behind(
    proxy: FaultProxy, s3_env: S3Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data file is published before the quarantine file: when S3 refuses the data, the
    partition has neither, not a quarantine that describes data nobody can read."""
    monkeypatch.setenv("PIPELINES_S3_MAX_ATTEMPTS", "1")
    lake = Lake(s3_env.uri("lake"))
    rows = [{**GOOD_EVENT, "event_id": f"e{i}"} for i in range(3)] + [{**GOOD_EVENT, "event_ts": "yesterday"}]
    lake.put_bytes("\n".join(json.dumps(r) for r in rows).encode(), f"landing/web_events/{DAY}/a.jsonl")
    proxy.add("status", times=None, methods="PUT", path=r"/lake/raw/", status=500)
    with pytest.raises(S3UploadFailedError):
        ingest_files(WEB, DAY, lake)
    assert [k for k in lake_objects(s3_env) if not k.startswith("lake/landing/")] == []

    proxy.clear()
    result = ingest_files(WEB, DAY, lake)
    assert (result.rows_landed, result.rows_quarantined) == (3, 1)
    assert lake.exists(result.raw_key) and result.quarantine_key and lake.exists(result.quarantine_key)
    puts = [s.path for s in proxy.seen if s.method == "PUT"]
    assert "/raw/" in puts[0] and "/quarantine/" in puts[1], puts


# ---------------------------------------------------------------------------- pool slots


def test_the_monitoring_daemon_frees_the_slots_of_a_dead_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the repo's dagster.yaml, a run that ended holding a pool slot (its worker crashed
    before releasing it) gets the slot freed by the monitoring daemon 5 minutes after it ended."""
    from dagster._core.test_utils import freeze_time
    from dagster._daemon.monitoring import execute_concurrency_slots_iteration
    from dagster._time import get_current_datetime

    repo = Path(__file__).resolve().parents[1]
    prod = yaml.safe_load((repo / "deploy" / "dagster-prod.yaml").read_text())["run_monitoring"]
    assert prod["enabled"] and prod["free_slots_after_run_end_seconds"] == 300
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(repo / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert "MONITORING" in instance.get_required_daemon_types()
        storage = instance.event_log_storage
        run = instance.create_run_for_job(dg.GraphDefinition("crashed").to_job())
        storage.set_concurrency_slots("sqlmesh", 1)
        storage.claim_concurrency_slot("sqlmesh", run.run_id, "sqlmesh_models")
        instance.report_run_failed(run, "the run worker was OOM-killed")

        daemon = types.SimpleNamespace(instance=instance)  # the daemon reads only .instance
        log = logging.getLogger("monitoring")
        list(execute_concurrency_slots_iteration(daemon, log))  # type: ignore[arg-type]
        assert len(storage.get_concurrency_info("sqlmesh").claimed_slots) == 1  # not yet
        with freeze_time(get_current_datetime() + timedelta(seconds=301)):
            list(execute_concurrency_slots_iteration(daemon, log))  # type: ignore[arg-type]
        assert storage.get_concurrency_info("sqlmesh").claimed_slots == []
