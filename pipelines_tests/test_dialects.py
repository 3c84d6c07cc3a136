"""Every bundled model renders to valid Athena and Trino SQL (we cannot run those engines here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot
from sqlglot.errors import ErrorLevel

from pipelines.settings import BUNDLED_SQLMESH_PROJECT


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """model -> {dialect: SQL}, rendered by SQLMesh with each gateway for one day."""
    import os

    from sqlmesh import Context

    tmp = tmp_path_factory.mktemp("dialects")
    old = dict(os.environ)
    os.environ.update(PIPELINES_DATA_DIR=str(tmp / "data"), PIPELINES_LAKE_URI=str(tmp / "lake"))
    out: dict[str, dict[str, str]] = {}
    try:
        for gateway, dialect in (("athena", "athena"), ("trino", "trino")):
            ctx = Context(paths=str(BUNDLED_SQLMESH_PROJECT), gateway=gateway)
            for name, model in ctx.models.items():
                if model.kind.is_external:
                    continue
                query = ctx.render(name, start="2026-05-01", end="2026-05-01", execution_time="2026-05-02")
                out.setdefault(model.name, {})[dialect] = query.sql(
                    dialect=dialect, unsupported_level=ErrorLevel.RAISE, pretty=True
                )
            ctx.close()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return out


def test_every_model_renders_for_athena_and_trino(rendered: dict[str, dict[str, str]]) -> None:
    models = {p.stem for p in Path(BUNDLED_SQLMESH_PROJECT, "models").rglob("*.sql")}
    assert {name.split(".")[-1] for name in rendered} == models
    for name, by_dialect in rendered.items():
        for dialect, sql in by_dialect.items():
            parsed = sqlglot.parse_one(sql, read=dialect, error_level=ErrorLevel.RAISE)
            assert parsed is not None, f"{name} does not parse as {dialect}"
            assert "::" not in sql, f"{name}: DuckDB cast syntax leaked into {dialect}"


def test_pii_masking_uses_each_engines_hash_function(rendered: dict[str, dict[str, str]]) -> None:
    athena = "".join(rendered["staging.stg_customers"]["athena"].upper().split())
    trino = "".join(rendered["staging.stg_customers"]["trino"].upper().split())
    assert "SHA256" in athena and "SHA256" in trino
    assert "TO_HEX(SHA256(TO_UTF8(" in athena and "TO_HEX(SHA256(TO_UTF8(" in trino  # varbinary there
    assert "EMAIL" in trino and "FULL_NAME" not in trino
