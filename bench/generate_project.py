"""Generate an N-model SQLMesh project (a layered DAG of daily incremental models) for benchmarks."""

from __future__ import annotations

import random
import sys
from pathlib import Path

# the repo root, so the bench shares the engine tests' DuckDB project config
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines_tests.sqlmesh_projects import CONFIG  # noqa: E402

ROOT_MODEL = """\
MODEL (
  name bench.m{i:04d},
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  description 'generated root model {i}',
  audits (not_null(columns := (ds, id)))
);
SELECT d::DATE AS ds, r AS id, (r * {i}) % 97 AS value
FROM generate_series(@start_date, @end_date, INTERVAL 1 DAY) AS t(d), range({rows}) AS x(r)
"""

CHILD_MODEL = """\
MODEL (
  name bench.m{i:04d},
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  description 'generated model {i} reading {parents}',
  audits (not_null(columns := (ds)))
);
SELECT a.ds, a.id, a.value + {i} AS value{extra}
FROM bench.m{first:04d} AS a
{joins}
WHERE a.ds BETWEEN @start_date AND @end_date
"""


def generate(root: Path, models: int, rows_per_day: int = 10, seed: int = 7) -> Path:
    """Write the project under ``root/project`` (DuckDB files under ``root/db``)."""
    rng = random.Random(seed)
    project = root / "project"
    (project / "models").mkdir(parents=True, exist_ok=True)
    (root / "db").mkdir(parents=True, exist_ok=True)
    (project / "config.yaml").write_text(
        CONFIG.format(db=root / "db" / "warehouse.duckdb", state=root / "db" / "state.duckdb")
    )
    roots = max(1, models // 10)
    for i in range(models):
        if i < roots:
            sql = ROOT_MODEL.format(i=i, rows=rows_per_day)
        else:
            parents = sorted(rng.sample(range(max(0, i - 50), i), k=min(2, i)))
            first, rest = parents[0], parents[1:]
            joins = "\n".join(
                f"JOIN bench.m{p:04d} AS p{p} ON p{p}.ds = a.ds AND p{p}.id = a.id "
                f"AND p{p}.ds BETWEEN @start_date AND @end_date"
                for p in rest
            )
            extra = "".join(f", p{p}.value AS value_{p}" for p in rest)
            sql = CHILD_MODEL.format(
                i=i, first=first, joins=joins, extra=extra, parents=", ".join(f"m{p:04d}" for p in parents)
            )
        (project / "models" / f"m{i:04d}.sql").write_text(sql)
    return project
