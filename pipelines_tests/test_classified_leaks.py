"""Nothing classified leaks into the UI or the data API (issue #38, item 4).

A failed check's sample rows go to Dagster's event log, which everyone with the UI reads; the data
API serves the marts to anyone holding a token; ``/ready`` answers whoever asks. Each is checked
here on real parts: a SQLMesh project built and checked through a real Dagster instance, the
demo warehouse with a table added by hand, and the API in front of it.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

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
