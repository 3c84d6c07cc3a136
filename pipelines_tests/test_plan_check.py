"""``pipelines plan-check`` end to end on the local stack: a prod built by a real run, a branch
with a breaking and a non-breaking change, the summary, and prod untouched afterwards."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from dagster_sqlmesh_bridge.identifiers import InvalidIdentifierError
from pipelines.ops.cli import main as cli_main
from pipelines.ops.plan_check import environment_name
from pipelines_tests.warehouse_fixture import DEMO_DAYS, build_warehouse

BUNDLED = Path(__file__).parents[1] / "pipelines" / "shop" / "sqlmesh_project"

NEW_MODEL = """\
MODEL (
  name marts.segment_sizes,
  kind FULL,
  owner 'team:analytics',
  description 'Customers per segment.',
  grain segment,
  column_descriptions (segment = 'Customer segment', customers = 'Customers in it'),
  audits (not_null(columns := (segment)))
);
SELECT segment, count(*)::BIGINT AS customers FROM marts.dim_customers GROUP BY segment
"""
NEW_MODEL_TEST = """\
test_segment_sizes:
  model: marts.segment_sizes
  inputs:
    marts.dim_customers:
      rows:
        - {customer_id: 1, segment: vip}
        - {customer_id: 2, segment: vip}
  outputs:
    query:
      rows:
        - {segment: vip, customers: 2}
"""


def test_environment_names_are_sanitised_branch_names() -> None:
    assert environment_name("feature/Add-FX rates") == "feature_add_fx_rates"
    assert environment_name("123-fix") == "b_123_fix"
    assert len(environment_name("x" * 200)) == 48
    for bad in ("prod", "PROD", "///", "production"):
        with pytest.raises(InvalidIdentifierError):
            environment_name(bad)


def prod_state(root: Path) -> tuple[dict[str, str], list[tuple], list[str], list[str]]:
    from sqlmesh import Context

    ctx = Context(paths=str(BUNDLED), gateway="local")
    try:
        env = ctx.state_sync.get_environment("prod")
        fingerprints = {s.name: s.fingerprint.to_identifier() for s in env.snapshots}
        environments = sorted(e.name for e in ctx.state_sync.get_environments())
    finally:
        ctx.close()
    con = duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True)
    try:
        revenue = con.execute("SELECT * FROM marts.daily_revenue ORDER BY order_date").fetchall()
        schemas = con.execute(
            "SELECT DISTINCT schema_name FROM duckdb_tables() UNION SELECT schema_name FROM duckdb_views()"
        ).fetchall()
    finally:
        con.close()
    return (
        fingerprints,
        revenue,
        sorted(s for (s,) in schemas if "__" in s and not s.startswith("sqlmesh__")),
        environments,
    )


def test_plan_check_diffs_a_breaking_and_a_non_breaking_change_and_leaves_prod_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("PIPELINES_ENV", "local")
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINES_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("PIPELINES_DEMO_SEED", "1")
    monkeypatch.delenv("SQLMESH_GATEWAY", raising=False)
    build_warehouse(tmp_path)  # prod, built by a real SQLMesh run over the demo days
    before = prod_state(tmp_path)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(BUNDLED))
    assert cli_main(["plan-check", "--branch", "main", "--end", DEMO_DAYS[-1]]) == 0
    assert "No model differs from prod." in capsys.readouterr().out

    project = tmp_path / "branch_project"
    shutil.copytree(BUNDLED, project, ignore=shutil.ignore_patterns(".cache", "logs"))
    revenue = project / "models" / "marts" / "daily_revenue.sql"  # breaking: returns count as revenue
    revenue.write_text(
        revenue.read_text().replace(
            "status IN ('placed', 'shipped')", "status IN ('placed', 'shipped', 'returned')"
        )
    )
    funnel = project / "models" / "marts" / "web_funnel.sql"  # non-breaking: a new column at the end
    funnel.write_text(
        funnel.read_text()
        .replace(
            "conversion_rate = 'checkout_sessions / sessions'",
            "conversion_rate = 'checkout_sessions / sessions',\n    events = 'Events'",
        )
        .replace("    AS conversion_rate\n", "    AS conversion_rate,\n  count(*)::BIGINT AS events\n")
    )
    (project / "models" / "marts" / "segment_sizes.sql").write_text(NEW_MODEL)  # added
    (project / "tests" / "test_segment_sizes.yaml").write_text(NEW_MODEL_TEST)
    tests = project / "tests" / "test_marts.yaml"  # the change comes with its unit tests updated
    tests.write_text(
        tests.read_text()
        .replace(
            "revenue_usd: 80.0, avg_order_value_usd: 40.0", "revenue_usd: 150.0, avg_order_value_usd: 50.0"
        )
        .replace("conversion_rate: 0.25}", "conversion_rate: 0.25, events: 7}")
    )
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    summary = tmp_path / "summary.md"
    code = cli_main(
        [
            "plan-check",
            "--branch",
            "feature/Revenue-Fix",
            "--start",
            DEMO_DAYS[0],
            "--end",
            DEMO_DAYS[-1],
            "--output",
            str(summary),
        ]
    )
    text = summary.read_text()
    assert code == 0, text
    assert text in capsys.readouterr().out
    assert (
        "Environment `feature_revenue_fix` on gateway `local`" in text
        and "The environment was removed afterwards." in text
    )
    assert (
        f"| `marts.daily_revenue` | directly modified | breaking | {DEMO_DAYS[0]} .. {DEMO_DAYS[-1]} |"
        in text
    )
    assert (
        f"| `marts.web_funnel` | directly modified | non-breaking | {DEMO_DAYS[0]} .. {DEMO_DAYS[-1]} |"
        in text
    )
    revenue_part = text.split("### `marts.daily_revenue`")[1].split("###")[0]
    assert "- rows: prod 3, branch 3" in revenue_part
    assert "schema: unchanged" in revenue_part
    assert (
        "changed" in revenue_part
        and "Sample of changed rows" in revenue_part
        and "revenue_usd" in revenue_part
    )
    assert "| `marts.segment_sizes` | added | added | nothing |" in text
    assert "Rows in `feature_revenue_fix` for the range: 3." in text  # consumer, business, vip
    funnel_part = text.split("### `marts.web_funnel`")[1]
    assert "- schema: added events" in funnel_part
    assert "0 changed" in funnel_part  # the old columns are the same

    after = prod_state(tmp_path)
    assert after == before  # prod's versions and data as they were; no environment schemas left

    # a change whose unit tests fail never gets an environment
    revenue.write_text(revenue.read_text().replace("'returned')", "'returned', 'cancelled')"))
    assert cli_main(["plan-check", "--branch", "feature/Revenue-Fix", "--end", DEMO_DAYS[-1]]) == 1
    assert "failing test" in capsys.readouterr().err
    assert prod_state(tmp_path) == before


def test_summaries_leave_pii_and_masked_columns_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.ops.plan_check import TableDiffSummary, _diff_markdown, _hidden_columns

    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    hidden = {
        fqn.split(".", 1)[-1].replace('"', ""): cols for fqn, cols in _hidden_columns(BUNDLED, None).items()
    }
    assert hidden["staging.stg_customers"] == ["email_hash"]
    assert hidden["staging.stg_web_events"] == ["ip_hash"]
    assert "email" in hidden["raw.customers"] and hidden["marts.daily_revenue"] == []
    sample = [{"customer_id": 1, "PROD__segment": "vip", "BR__segment": "consumer|x"}]
    text = "\n".join(_diff_markdown(TableDiffSummary(3, 3, ["c"], [], [], 2, 1, 0, 0, sample)))
    assert "- schema: added c" in text and "| 1 | vip | consumer\\|x |" in text
