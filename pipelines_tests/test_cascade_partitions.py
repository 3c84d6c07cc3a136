"""A person's run of an unpartitioned model restates what is downstream of it, as ``sqlmesh plan
--restate-model`` does; a partitioned model recomputed that way is recorded per partition. An
event without a partition for a partitioned asset made Dagster's asset backfill of the FULL and
the partitioned models fail ("received an unpartitioned materialization"), found running the
production topology (pipelines_tests/test_topology.py)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dagster_sqlmesh_bridge.component.component import component_for_dirs
from dagster_sqlmesh_bridge.component.quality import QualityModel
from pipelines_tests.sqlmesh_projects import write_files

CONFIG = """\
gateways:
  local:
    connection: {type: duckdb, database: db.db}
default_gateway: local
model_defaults: {dialect: duckdb, start: '2026-01-01', cron: '@daily'}
"""
FILES = {
    "config.yaml": CONFIG,
    "models/dim.sql": "MODEL (name demo.dim, kind FULL);\nSELECT 1 AS id UNION ALL SELECT 2 AS id\n",
    "models/fact.sql": """\
MODEL (name demo.fact, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));
SELECT d::DATE AS ds, dim.id
FROM generate_series(@start_date, @end_date, INTERVAL 1 DAY) AS t(d), demo.dim AS dim
""",
}
DAYS = ("2026-01-01", "2026-01-03")


def test_a_full_models_run_records_its_partitioned_downstream_per_partition(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_files(project, FILES)
    component = component_for_dirs([project], quality=QualityModel(default_checks=False))
    defs = component.build_project_defs(component.load_project_info())
    keys = {k.to_user_string(): k for k in defs.resolve_asset_graph().get_all_asset_keys()}
    jobs = [
        dg.define_asset_job("fact", selection=[keys["demo/fact"]]),
        dg.define_asset_job("dim", selection=[keys["demo/dim"]]),
    ]
    merged = dg.Definitions.merge(defs, dg.Definitions(jobs=jobs))
    tags = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]}
    with dg.DagsterInstance.ephemeral() as instance:
        assert merged.resolve_job_def("fact").execute_in_process(instance=instance, tags=tags).success
        result = merged.resolve_job_def("dim").execute_in_process(instance=instance)  # a person's run
        assert result.success
        events = result.get_asset_materialization_events()
    cascaded = [e for e in events if e.asset_key == keys["demo/fact"]]
    assert cascaded, "the restatement recomputed demo.fact downstream of demo.dim"
    partitions = [e.partition for e in cascaded]
    assert None not in partitions  # each recomputed day as the partition it is
    assert set(partitions) >= {"2026-01-01", "2026-01-02", "2026-01-03"}
    rows = {e.partition: e.materialization.metadata["dagster/row_count"].value for e in cascaded}
    assert rows["2026-01-02"] == 2
