"""Governance: classification, PII lint, masking on real data, retention, impact, audit trail."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from dagster_sqlmesh_bridge import ProjectInfo, SQLMeshResource, SQLMeshTranslator, load_project
from pipelines.governance.audit_log import audit_key, audit_sensors, write_audit_record
from pipelines.governance.classification import (
    Governance,
    classification_tags,
    column_classifications,
    load_governance,
    parse_governance,
    with_classification_tags,
)
from pipelines.governance.impact import impact, impacted_reports, parse_column_ref
from pipelines.governance.impact import main as impact_main
from pipelines.governance.pii_lint import lint_pii
from pipelines.governance.pii_lint import main as lint_main
from pipelines.governance.retention import apply_retention
from pipelines.platform.lake import Lake
from pipelines.platform.resources import LakeResource
from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT, Settings
from pipelines.shop.governance_jobs import build_defs, retention_job, sqlmesh_janitor_job
from pipelines.shop.sources.contracts import CONTRACTS
from pipelines_tests.conftest import Deployment

DAYS = ("2026-03-02", "2026-03-03")
SALT = "governance-test-salt"
SENSITIVE_PATTERNS = {
    "e-mail address": r"[^@\s]+@[^@\s]+\.[a-z]+",
    "IPv4 address": r"(^|[^0-9.])([0-9]{1,3}\.){3}[0-9]{1,3}([^0-9.]|$)",
    "shipping address": r"[0-9]+ Main Street|Springfield",
    "customer name": r"Customer [0-9]+",
}


def ref(project: ProjectInfo, name: str) -> tuple[str, str]:
    return parse_column_ref(project, name)


def named(project: ProjectInfo, refs: list[tuple[str, str]]) -> set[str]:
    return {f"{project.models[f].schema}.{project.models[f].table}.{c}" for f, c in refs}


@pytest.fixture(scope="module")
def bundled() -> ProjectInfo:
    return load_project(BUNDLED_SQLMESH_PROJECT)


# ---------------------------------------------------------------------------- classification


def test_columns_are_classified_from_contracts_lineage_and_governance_yaml(bundled: ProjectInfo) -> None:
    levels = column_classifications(bundled)

    def level(name: str) -> str:
        fqn, column = ref(bundled, name)
        return levels[fqn][column]

    assert level("raw.customers.email") == "pii"  # the contract
    assert level("staging.stg_customers.email_hash") == "masked"  # governance.yaml
    assert level("marts.dim_customers.email_hash") == "masked"  # inherited from the masked column
    assert level("staging.stg_web_events.ip_hash") == "masked"
    assert level("marts.category_sales.category") == "public"  # public all the way from products
    assert level("marts.fct_orders.customer_segment") == "internal"
    assert level("marts.daily_revenue.orders") == "internal"  # count(*): no column, the default
    assert all(lv != "pii" for m in bundled.internal_models for lv in levels[m.fqn].values())
    assert classification_tags("masked") == {"classification": "masked"}
    # what the translator does with them: a tag per column in the asset's column schema
    dim = bundled.models[ref(bundled, "marts.dim_customers.email_hash")[0]]
    schema = with_classification_tags(SQLMeshTranslator().get_column_schema(dim), levels[dim.fqn])
    tagged = {c.name: c.tags for c in schema.columns}
    assert tagged["email_hash"] == {"classification": "masked"}
    assert tagged["segment"] == {"classification": "internal"}
    with pytest.raises(ValueError):
        classification_tags("secret")


def test_bundled_project_passes_the_pii_lint(bundled: ProjectInfo, capsys: pytest.CaptureFixture) -> None:
    assert lint_pii(bundled) == []
    assert lint_main([str(BUNDLED_SQLMESH_PROJECT)]) == 0
    assert "0 violation(s)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ProjectInfo]:
    """A copy of the bundled project with a mart that selects the raw e-mail address."""
    root = tmp_path_factory.mktemp("leaky")
    project_dir = root / "project"
    shutil.copytree(BUNDLED_SQLMESH_PROJECT, project_dir, ignore=shutil.ignore_patterns(".cache", "logs"))
    (project_dir / "models" / "marts" / "leaky.sql").write_text(
        "MODEL (name marts.leaky, kind FULL);\n"
        "SELECT c.customer_id, r.email AS contact, c.segment\n"
        "FROM staging.stg_customers AS c JOIN raw.customers AS r ON r.customer_id = c.customer_id\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINES_DATA_DIR", str(root / "data"))
        mp.setenv("PIPELINES_LAKE_URI", str(root / "lake"))
        return project_dir, load_project(project_dir, use_cache=False)


def test_a_mart_selecting_a_raw_email_fails_the_lint(leaky: tuple[Path, ProjectInfo]) -> None:
    project_dir, project = leaky
    declared = load_governance(project)

    def with_rules(rules: dict) -> Governance:
        return declared.merged(parse_governance({"models": rules}))

    violations = lint_pii(project)
    assert [(v.rule, v.model, v.column) for v in violations] == [("pii-in-mart", "marts.leaky", "contact")]
    assert "marts.leaky.contact <- raw.customers.email (pii)" in violations[0].message

    # a reclassification with a reason clears it; one without a reason does not
    reasoned = with_rules(
        {"marts.leaky": {"columns": {"contact": {"classification": "confidential", "reason": "CRM"}}}}
    )
    assert lint_pii(project, reasoned) == []
    bare = with_rules({"marts.leaky": {"columns": {"contact": {"classification": "internal"}}}})
    assert [v.rule for v in lint_pii(project, bare)] == ["downgrade-without-reason"]
    # declaring it masked is a lie the lint catches: the SQL does not use @mask_pii
    lie = with_rules({"marts.leaky": {"columns": {"contact": {"masked": True}}}})
    assert [v.rule for v in lint_pii(project, lie)] == ["masked-without-mask_pii"]
    stale = with_rules({"marts.gone": {"columns": {"x": {"classification": "public"}}}})
    assert "unknown-model" in [v.rule for v in lint_pii(project, stale)]

    # the CLI that CI runs exits 1 and names the column
    env = {**os.environ, "PIPELINES_DATA_DIR": str(project_dir.parent / "data")}
    env["PIPELINES_BRIDGE_CACHE_DIR"] = str(project_dir.parent / "cache")
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.governance.pii_lint", str(project_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "marts.leaky.contact" in done.stdout and "raw.customers.email" in done.stdout


# ---------------------------------------------------------------------------- impact


def test_impact_of_source_columns(bundled: ProjectInfo, capsys: pytest.CaptureFixture) -> None:
    customer_id = named(bundled, impact(bundled, "raw.orders", "customer_id"))
    assert "marts.fct_orders.customer_id" in customer_id
    assert "intermediate.int_order_lines.customer_id" in customer_id
    assert named(bundled, impact(bundled, "customers", "segment")) == {
        "staging.stg_customers.segment",
        "marts.dim_customers.segment",
        "marts.fct_orders.customer_segment",
    }
    email = impact(bundled, "raw.customers", "email")
    assert named(bundled, email) == {"staging.stg_customers.email_hash", "marts.dim_customers.email_hash"}
    # the report reads fct_orders but not dim_customers
    report = dg.AssetKey(["reports", "shop_report"])
    assert impacted_reports(bundled, impact(bundled, "orders", "customer_id")) == [report]
    assert impacted_reports(bundled, email) == []
    crm = dg.AssetKey(["exports", "crm"])
    assert impacted_reports(bundled, email, {crm: [dg.AssetKey(["marts", "dim_customers"])]}) == [crm]
    with pytest.raises(KeyError):
        impact(bundled, "raw.customers", "no_such_column")

    assert impact_main(["raw.customers.segment"]) == 0
    out = capsys.readouterr().out
    assert "marts.fct_orders.customer_segment" in out and "reports/shop_report" in out


# ---------------------------------------------------------------------------- retention


def _seed_lake(lake: Lake, today: date) -> None:
    def put(key: str) -> None:
        lake.put_bytes(b"x", key)

    for age in (10, 90, 91, 400, 401):
        day = (today - timedelta(days=age)).isoformat()
        put(f"raw/customers/ds={day}/data.parquet")  # 400 days
        put(f"raw/web_events/ds={day}/data.parquet")  # 90 days
        put(f"quarantine/orders/ds={day}/rejected.jsonl")  # 30 days
    put("raw/customers/notes/readme.txt")  # not a partition
    put("raw/customers/ds=2020-13-45/data.parquet")  # not a date
    put("raw/unknown_source/ds=2000-01-01/data.parquet")  # no contract
    put("raw/loose.txt")
    put("landing/web_events/2000-01-01/events.jsonl")  # another zone: never touched


def _expected_remaining(today: date) -> set[str]:
    def day(age: int) -> str:
        return (today - timedelta(days=age)).isoformat()

    return {
        *(f"raw/customers/ds={day(a)}/data.parquet" for a in (10, 90, 91, 400)),
        *(f"raw/web_events/ds={day(a)}/data.parquet" for a in (10, 90)),
        f"quarantine/orders/ds={day(10)}/rejected.jsonl",
        "raw/customers/notes/readme.txt",
        "raw/customers/ds=2020-13-45/data.parquet",
        "raw/unknown_source/ds=2000-01-01/data.parquet",
        "raw/loose.txt",
        "landing/web_events/2000-01-01/events.jsonl",
    }


def _keys(lake: Lake) -> set[str]:
    return {o.key for zone in ("raw", "quarantine", "landing") for o in lake.list(zone)}


def test_retention_deletes_only_expired_partitions(tmp_path: Path) -> None:
    lake, today = Lake(str(tmp_path / "lake")), date(2026, 6, 1)
    _seed_lake(lake, today)
    before = _keys(lake)

    def day(age: int) -> str:
        return (today - timedelta(days=age)).isoformat()

    expired = {("raw", "customers", day(401))}
    expired |= {("raw", "web_events", day(a)) for a in (91, 400, 401)}
    expired |= {("quarantine", "orders", day(a)) for a in (90, 91, 400, 401)}

    dry = apply_retention(lake, CONTRACTS, today, dry_run=True)
    assert {(d.zone, d.source, d.partition) for d in dry.deleted} == expired and _keys(lake) == before

    report = apply_retention(lake, CONTRACTS, today)
    assert _keys(lake) == _expected_remaining(today)
    assert {(d.zone, d.source, d.partition) for d in report.deleted} == expired
    assert all(d.objects == 1 for d in report.deleted) and report.kept == 7
    assert {s.prefix for s in report.skipped} == {
        "raw/customers/notes/",
        "raw/customers/ds=2020-13-45/",
        "raw/unknown_source/",
        "raw/loose.txt",
    }
    assert not (tmp_path / "lake" / "raw" / "web_events" / f"ds={today - timedelta(days=91)}").exists()
    assert apply_retention(lake, CONTRACTS, today).deleted == []  # idempotent


def test_retention_on_s3(s3_env) -> None:  # noqa: ANN001 - fixture from pipelines_tests.services
    lake, today = Lake(s3_env.uri("lake")), date(2026, 6, 1)
    _seed_lake(lake, today)
    report = apply_retention(lake, CONTRACTS, today)
    assert len(report.deleted) == 8
    assert _keys(lake) == _expected_remaining(today)


def test_retention_job_observes_what_it_deleted(tmp_path: Path) -> None:
    lake_uri = str(tmp_path / "lake")
    lake, today = Lake(lake_uri), datetime.now(UTC).date()
    _seed_lake(lake, today)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = retention_job.execute_in_process(
            instance=instance, resources={"lake": LakeResource(uri=lake_uri)}
        )
        assert result.success
        assert _keys(lake) == _expected_remaining(today)
        observed = {e.asset_key: e for e in result.get_asset_observation_events()}
        assert set(observed) == {dg.AssetKey(["raw", "customers"]), dg.AssetKey(["raw", "web_events"])} | {
            dg.AssetKey(["raw", "orders"])
        }
        web = observed[dg.AssetKey(["raw", "web_events"])].asset_observation_data.asset_observation.metadata
        assert len(web["retention/raw_partitions_deleted"].value) == 3
        assert web["retention/retention_days"].value == 90
        output = result.output_for_node("apply_retention")
        assert output["deleted_partitions"] == 8 and len(output["skipped"]) == 4


# ---------------------------------------------------------------------------- audit trail


def test_audit_records_are_written_once(tmp_path: Path, s3_env) -> None:  # noqa: ANN001
    record = {"run_id": "abc-123", "ended_at": "2026-03-04T10:00:00+00:00", "status": "SUCCESS"}
    for lake in (Lake(str(tmp_path / "lake")), Lake(s3_env.uri("lake"))):
        key = write_audit_record(lake, record)
        assert key == "audit/2026/03/04/abc-123.json"
        assert write_audit_record(lake, {**record, "status": "FORGED"}) is None
        assert json.loads(lake.get_bytes(key)) == record
        assert [o.key for o in lake.list("audit")] == [key]
    with pytest.raises(ValueError):
        audit_key("../../etc", datetime.now(UTC))


def test_failed_run_gets_an_audit_record_without_secrets(tmp_path: Path) -> None:
    @dg.op
    def explode() -> None:
        raise RuntimeError("cannot connect: host=db password=hunter2 (postgresql://u:hunter2@db/x)")

    @dg.job(tags={"dagster/schedule_name": "nightly"})
    def fragile() -> None:
        explode()

    lake_uri = str(tmp_path / "lake")
    sensor = {s.name: s for s in audit_sensors()}["audit_trail_failure"]
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = fragile.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        with dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"lake": LakeResource(uri=lake_uri)},
        ) as context:
            sensor(context)
    (obj,) = Lake(lake_uri).list("audit")
    text = Lake(lake_uri).get_bytes(obj.key).decode()
    record = json.loads(text)
    assert obj.key.endswith(f"/{result.run_id}.json") and text.count("\n") == 1
    assert record["status"] == "FAILURE" and record["job_name"] == "fragile"
    assert record["trigger"] == {"kind": "schedule", "schedule": "nightly"}
    assert record["errors"][0]["step"] == "explode" and "cannot connect" in record["errors"][0]["message"]
    assert "hunter2" not in text


# ---------------------------------------------------------------------------- a real pipeline run


@pytest.fixture(scope="module")
def shop_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Deployment, dg.ExecuteInProcessResult]]:
    """The bundled project over two demo days, with a non-default PII salt."""
    root = tmp_path_factory.mktemp("governance_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINES_ENV", "local")
        mp.setenv("PIPELINES_DATA_DIR", str(root / "data"))
        mp.setenv("PIPELINES_LAKE_URI", str(root / "lake"))
        mp.setenv("DAGSTER_HOME", str(root / "dagster"))
        mp.setenv("PIPELINES_PII_SALT", SALT)
        mp.delenv("SQLMESH_PROJECT_DIR", raising=False)
        mp.delenv("SQLMESH_GATEWAY", raising=False)
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            deployment = Deployment(root, Settings.from_env(), instance)
            result = deployment.run("*", start=DAYS[0], end=DAYS[1])
            assert result.success
            yield deployment, result


def _warehouse(deployment: Deployment) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(deployment.settings.data_dir / "warehouse.duckdb"), read_only=True)


def _matches(con: duckdb.DuckDBPyConnection, schemas: str) -> dict[str, int]:
    """``schema.table.column: what`` -> matching rows, over every column cast to text."""
    columns = con.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        f"WHERE regexp_matches(table_schema, '{schemas}') ORDER BY ALL"
    ).fetchall()
    assert columns, f"no tables in {schemas}"
    found = {}
    for schema, table, column in columns:
        for what, pattern in SENSITIVE_PATTERNS.items():
            (count,) = con.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" WHERE regexp_matches("{column}"::VARCHAR, ?)',
                [pattern],
            ).fetchone()
            if count:
                found[f"{schema}.{table}.{column}: {what}"] = count
    return found


def test_no_raw_pii_in_staging_intermediate_or_marts(
    shop_run: tuple[Deployment, dg.ExecuteInProcessResult],
) -> None:
    deployment, _ = shop_run
    con = _warehouse(deployment)
    try:
        # the scan finds PII where it must be: the raw zone has every kind
        raw = _matches(con, "^raw$")
        assert {key.split(": ")[1] for key in raw} == set(SENSITIVE_PATTERNS)
        # and none past staging, in the environment's views and in SQLMesh's physical tables
        assert _matches(con, "^(staging|intermediate|marts|sqlmesh__.*)$") == {}
    finally:
        con.close()


def test_pii_salt_comes_from_the_environment(shop_run: tuple[Deployment, dg.ExecuteInProcessResult]) -> None:
    deployment, _ = shop_run
    con = _warehouse(deployment)
    try:
        rows = con.execute(
            "SELECT r.email, d.email_hash FROM marts.dim_customers AS d "
            "JOIN raw.customers AS r USING (customer_id) WHERE r.ds = (SELECT max(ds) FROM raw.customers) "
            "ORDER BY customer_id LIMIT 5"
        ).fetchall()
    finally:
        con.close()
    assert rows

    def digest(salt: str, email: str) -> str:
        return hashlib.sha256((salt + email.lower()).encode()).hexdigest()

    for email, email_hash in rows:
        assert email_hash == digest(SALT, email)
        assert email_hash != digest("local-development-salt", email)  # the default was not used
    # the secret is nowhere SQLMesh or Dagster keep text: SQLMesh's state (read with SQL, DuckDB
    # compresses strings) and every other file (Dagster's SQLite storage, logs)
    state = duckdb.connect(str(deployment.settings.data_dir / "sqlmesh_state.duckdb"), read_only=True)
    try:
        hits = {"mask_pii": 0, SALT: 0}
        for schema, table, column in state.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns"
        ).fetchall():
            for needle in hits:
                hits[needle] += state.execute(
                    f'SELECT count(*) FROM "{schema}"."{table}" WHERE contains("{column}"::VARCHAR, ?)',
                    [needle],
                ).fetchone()[0]
    finally:
        state.close()
    assert hits["mask_pii"] > 0 and hits[SALT] == 0  # the scan sees the macro, never the salt
    for path in deployment.root.rglob("*"):
        if path.is_file() and path.suffix not in (".parquet", ".duckdb", ".wal"):
            assert SALT.encode() not in path.read_bytes(), f"the PII salt leaked into {path}"


def test_successful_run_gets_a_complete_audit_record(
    shop_run: tuple[Deployment, dg.ExecuteInProcessResult],
) -> None:
    deployment, result = shop_run
    sensor = {s.name: s for s in audit_sensors()}["audit_trail_success"]
    with dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=result.get_run_success_event(),
        dagster_instance=deployment.instance,
        dagster_run=result.dagster_run,
        resources={"lake": LakeResource(uri=deployment.settings.lake_uri)},
    ) as context:
        sensor(context)
    lake = Lake(deployment.settings.lake_uri)
    (obj,) = [o for o in lake.list("audit") if o.key.endswith(f"/{result.run_id}.json")]
    record = json.loads(lake.get_bytes(obj.key))
    assert record["status"] == "SUCCESS" and record["trigger"] == {"kind": "manual"}
    assert record["tags"]["dagster/asset_partition_range_start"] == DAYS[0]
    assets = {a["asset_key"]: a for a in record["assets"]}
    revenue = assets["marts/daily_revenue"]
    assert revenue["sqlmesh_intervals"] == [
        [f"{DAYS[0]} 00:00", f"{date.fromisoformat(DAYS[1]) + timedelta(1)} 00:00"]
    ]
    assert revenue["row_count"] == 2 and len(revenue["sqlmesh_fingerprint"]) > 4
    assert sorted(revenue["partitions"]) == list(DAYS)
    assert "raw/orders" in assets
    checks = {(c["asset_key"], c["check_name"]): c for c in record["checks"]}
    assert checks[("marts/daily_revenue", "unique_values")]["passed"] is True
    assert checks[("marts/daily_revenue", "not_null")]["severity"] == "ERROR"
    assert record["checks_failed"] == sum(not c["passed"] for c in record["checks"])
    assert record["errors"] == []
    sensor(context)  # a second evaluation of the same run changes nothing
    assert len([o for o in lake.list("audit") if result.run_id in o.key]) == 1


def test_janitor_job_runs_on_the_deployment(shop_run: tuple[Deployment, dg.ExecuteInProcessResult]) -> None:
    deployment, _ = shop_run
    resource = SQLMeshResource(project_dir=str(deployment.settings.sqlmesh_project_dir))
    outcome = sqlmesh_janitor_job.execute_in_process(
        instance=deployment.instance, resources={"sqlmesh": resource}
    )
    assert outcome.success
    assert isinstance(outcome.output_for_node("run_sqlmesh_janitor"), list)


def test_governance_definitions_load(bundled: ProjectInfo) -> None:
    defs = dg.Definitions.merge(
        build_defs(bundled),
        dg.Definitions(
            resources={"lake": LakeResource(uri="/tmp/unused"), "sqlmesh": SQLMeshResource(project_dir=".")}
        ),
    )
    repo = defs.get_repository_def()
    assert {"retention", "sqlmesh_janitor"} <= set(repo.job_names)
    schedules = {s.name: s for s in repo.schedule_defs}
    assert schedules["retention_daily"].default_status == dg.DefaultScheduleStatus.STOPPED
    assert {s.name for s in repo.sensor_defs} == {
        "audit_trail_success",
        "audit_trail_failure",
        "audit_trail_canceled",
    }
