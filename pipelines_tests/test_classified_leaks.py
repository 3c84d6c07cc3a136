"""Nothing classified leaks into the UI or the data API (issue #38, item 4).

A failed check's sample rows go to Dagster's event log, which everyone with the UI reads; the data
API serves the marts to anyone holding a token; ``/ready`` answers whoever asks. Each is checked
here on real parts: a SQLMesh project built and checked through a real Dagster instance, the
demo warehouse with a table added by hand, and the API in front of it.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from fastapi.testclient import TestClient

from pipelines.api import create_app
from pipelines.api.auth import TOKEN_FILE, load_keys
from pipelines.platform.settings import Settings
from pipelines_tests.conftest import Deployment, check_results
from pipelines_tests.sqlmesh_projects import CONFIG

SIGNUPS = """\
MODEL (name t.signups, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));
SELECT ds::DATE AS ds, id::BIGINT AS id, email::TEXT AS email, note::TEXT AS note, segment::TEXT AS segment
FROM read_csv('{csv}') WHERE ds BETWEEN @start_ds AND @end_ds
"""
# ``SELECT *`` over a file: SQLMesh cannot tell its columns, so nothing classifies them
SIGNUPS_RAW = """\
MODEL (name t.signups_raw, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));
SELECT * FROM read_csv('{csv}') WHERE ds BETWEEN @start_ds AND @end_ds
"""
GOVERNANCE = """\
models:
  t.signups:
    columns:
      email: {classification: pii}
      note: {classification: confidential}
"""
QUALITY = """\
defaults:
  warmup: 1
models:
  t.signups:
    sample_columns: [ds, id, email, note]
  t.signups_raw:
    sample_columns: [ds, id, email]
"""
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04")


@pytest.fixture
def signups_project(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Signups with an e-mail (pii) and a note (confidential); on the last day half the segments
    are NULL, so null drift fails there and samples its rows."""
    root = deployment.root / "signups_project"
    (root / "models").mkdir(parents=True)
    data = deployment.settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    csv = deployment.root / "signups.csv"
    lines = ["ds,id,email,note,segment"]
    for d, day in enumerate(DAYS):
        for i in range(20):
            n = d * 100 + i
            segment = "" if day == DAYS[-1] and i % 2 else "retail"
            lines.append(f"{day},{n},person{n}@example.com,secret note {n},{segment}")
    csv.write_text("\n".join(lines) + "\n")
    (root / "config.yaml").write_text(
        CONFIG.format(db=data / "warehouse.duckdb", state=deployment.root / "state.duckdb")
    )
    (root / "models" / "signups.sql").write_text(SIGNUPS.format(csv=csv))
    (root / "models" / "signups_raw.sql").write_text(SIGNUPS_RAW.format(csv=csv))
    (root / "governance.yaml").write_text(GOVERNANCE)
    (root / "quality.yaml").write_text(QUALITY)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(root))
    return root


def test_a_failed_checks_sample_keeps_classified_columns_out_of_the_event_log(
    signups_project: Path, deployment: Deployment
) -> None:
    result = deployment.run("*", start=DAYS[0], end=DAYS[-1])
    assert result.success
    # the values are in the warehouse, and nowhere in what the instance stored of the run
    with duckdb.connect(str(deployment.settings.data_dir / "warehouse.duckdb"), read_only=True) as con:
        (emails,) = con.execute("SELECT count(*) FROM t.signups WHERE email LIKE '%@example.com'").fetchone()
    assert emails == 80
    entries = deployment.instance.all_logs(result.run_id)
    stored = {i: dg.serialize_value(entry) for i, entry in enumerate(entries)}
    assert any("offending_rows" in text for text in stored.values())
    leaking = [
        f"{entries[i].dagster_event_type}: {entries[i].user_message[:80]}"
        for i, text in stored.items()
        if "@example.com" in text or "secret note" in text
    ]
    assert leaking == []

    checks = check_results(result)

    nulls = checks[("t/signups", "null_drift")]
    assert not nulls.passed and nulls.metadata["column"].value == "segment"
    sample = nulls.metadata["offending_rows"].value.splitlines()
    assert sample[0] == "| ds | id | segment |" and len(sample) == 12  # header, rule, 10 rows
    assert nulls.metadata["offending_rows_withheld"].value == (
        "columns classified pii: email; columns classified confidential: note"
    )
    # a model whose columns nothing classifies: no row at all, and why
    raw = checks[("t/signups_raw", "null_drift")]
    assert not raw.passed and "offending_rows" not in raw.metadata
    assert raw.metadata["offending_rows_withheld"].value == (
        "columns without a classification: ds, id, email, segment"
    )


# -- the data API -------------------------------------------------------------------------------


@pytest.fixture
def demo_with_a_hand_made_mart(tmp_path: Path, built_warehouse: Settings) -> Settings:
    """The demo warehouse, plus a marts table an external tool created: no model defines it."""
    data_dir = tmp_path / "data"
    shutil.copytree(built_warehouse.data_dir, data_dir, ignore=shutil.ignore_patterns(TOKEN_FILE))
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as db:
        db.execute(
            "CREATE TABLE marts.crm_contacts AS SELECT 1::BIGINT AS customer_id, "
            "'someone@example.com' AS email, 'someone@example.com' AS contact, 'Lyon' AS city"
        )
    return dataclasses.replace(built_warehouse, data_dir=data_dir)


def test_a_table_no_model_defines_is_neither_listed_nor_served(demo_with_a_hand_made_mart: Settings) -> None:
    settings = demo_with_a_hand_made_mart
    keys = load_keys(settings, {})  # the local development token, with access to everything
    token = (settings.data_dir / TOKEN_FILE).read_text().strip()
    client = TestClient(create_app(settings, keys=keys), headers={"Authorization": f"Bearer {token}"})

    for url in (
        "/datasets/crm_contacts",
        "/datasets/crm_contacts/rows",
        "/datasets/crm_contacts/rows?city=Lyon",
    ):
        response = client.get(url)
        assert response.status_code == 403, (url, response.text)
        detail = response.json()["detail"]
        assert "crm_contacts" in detail and "no classification" in detail
        assert "example.com" not in response.text and "Lyon" not in response.text
    listed = client.get("/datasets")
    assert listed.status_code == 200
    names = [d["name"] for d in listed.json()["datasets"]]
    assert names == ["category_sales", "daily_revenue", "dim_customers", "fct_orders", "web_funnel"]
    assert "crm_contacts" not in listed.text
    assert client.get("/datasets/fct_orders/rows", params={"limit": 1}).status_code == 200


def test_ready_says_nothing_about_the_data_without_a_token(demo_with_a_hand_made_mart: Settings) -> None:
    settings = demo_with_a_hand_made_mart
    keys = load_keys(settings, {})
    token = (settings.data_dir / TOKEN_FILE).read_text().strip()
    client = TestClient(create_app(settings, keys=keys))
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = client.get("/ready", headers=headers)
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}
    detailed = client.get("/ready", headers={"Authorization": f"Bearer {token}"})
    assert detailed.status_code == 200
    assert detailed.json() == {"status": "ready", "env": "local", "datasets": 5}
    # still a readiness probe: no warehouse, no readiness, token or not
    gone = TestClient(
        create_app(dataclasses.replace(settings, data_dir=settings.data_dir / "gone"), keys=keys)
    )
    response = gone.get("/ready")
    assert response.status_code == 503 and response.json()["detail"].startswith("warehouse unavailable")
