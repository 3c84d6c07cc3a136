"""The bundled SQLMesh project's own checks, as CI runs them: SQLMesh unit tests
(``pipelines/shop/sqlmesh_project/tests/*.yaml``) and SQLMesh's linter with our rules
(``pipelines/shop/sqlmesh_project/linter/``). A broken model or a lint violation fails here with
SQLMesh's own output (its row diff, the model and rule named)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).parents[1] / "pipelines" / "shop" / "sqlmesh_project"
# not the development default: the tests must hold under whatever secret salt prod uses
SALT = "a-secret-salt-with-a-'quote"
SQLMESH = str(Path(sys.executable).parent / "sqlmesh")


@pytest.fixture
def sqlmesh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINES_PII_SALT", SALT)
    monkeypatch.delenv("SQLMESH_GATEWAY", raising=False)
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def context(sqlmesh_env: dict[str, str]) -> Iterator[object]:
    from sqlmesh import Context

    ctx = Context(paths=str(PROJECT), gateway="local")
    try:
        yield ctx
    finally:
        ctx.close()


def project_copy(tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(PROJECT, target, ignore=shutil.ignore_patterns(".cache", "logs", "__pycache__"))
    return target


def sqlmesh(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SQLMESH, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_every_model_has_unit_tests_and_they_pass(context: object) -> None:
    tested = set()
    for path in (PROJECT / "tests").glob("*.yaml"):
        tested |= {body["model"] for body in yaml.safe_load(path.read_text()).values()}
    models = {m.name for m in context.models.values() if not m.kind.is_external}
    assert models and models <= tested, f"models without a unit test: {sorted(models - tested)}"
    result = context.test()
    assert result.testsRun >= len(models)
    assert result.wasSuccessful(), [str(f) for f in result.failures + result.errors]


def test_a_broken_model_fails_sqlmesh_test_with_the_row_diff(
    tmp_path: Path, sqlmesh_env: dict[str, str]
) -> None:
    project = project_copy(tmp_path)
    model = project / "models" / "marts" / "daily_revenue.sql"
    # the bug: cancelled orders count as revenue
    model.write_text(model.read_text().replace("status IN ('placed', 'shipped')", "status IS NOT NULL"))
    # and PII leaks: the e-mail address is no longer masked
    staging = project / "models" / "staging" / "stg_customers.sql"
    staging.write_text(staging.read_text().replace("@mask_pii(email)", "email"))
    result = sqlmesh(project, sqlmesh_env, "test")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "test_daily_revenue_excludes_cancelled_and_returned_orders" in out
    assert "test_stg_customers_masks_pii_and_keeps_the_latest_snapshot" in out
    assert "revenue_usd" in out and "email_hash" in out and "Data mismatch" in out, out
    # the other models' tests still pass: the failure points at the broken model only
    assert "test_fct_orders" not in out


def test_the_bundled_project_passes_the_linter(context: object) -> None:
    assert context.config.linter.enabled
    assert "all" in context.config.linter.rules
    assert context.lint_models(raise_on_error=False) == []


def test_a_lint_violation_fails_naming_the_model_and_the_rule(
    tmp_path: Path, sqlmesh_env: dict[str, str]
) -> None:
    project = project_copy(tmp_path)
    (project / "models" / "marts" / "undocumented.sql").write_text(
        "MODEL (name marts.undocumented, kind INCREMENTAL_BY_TIME_RANGE (time_column order_date),\n"
        "  audits (unique_values(columns := (order_date))));\n"
        "SELECT order_date, count(*) AS orders FROM marts.fct_orders\n"
        "WHERE order_date BETWEEN @start_date AND @end_date GROUP BY order_date\n"
    )
    result = sqlmesh(project, sqlmesh_env, "lint")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "modeldocumented: Model marts.undocumented has no owner" in out
    assert "timecolumnnotnull: Model marts.undocumented is incremental by 'order_date'" in out
    assert "nomissingunittest" in out  # SQLMesh's built-in rules are on too
