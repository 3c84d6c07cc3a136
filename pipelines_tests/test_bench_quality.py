"""The precision/recall bench of the default quality checks still runs and still measures.

``bench/bench_quality.py`` is run on a tiny project (6 models × 30 normal days, two anomaly days
seeding a volume drop and a volume spike each): the real hook must catch every seeded volume
anomaly on its own model, raise nothing on the clean models that day, and the normal-day rates
must be computed from evaluations of every default check (so the bench cannot rot silently).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_quality.py"


def load_bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module
    spec.loader.exec_module(module)
    return module


def test_bench_catches_seeded_volume_anomalies_and_computes_rates() -> None:
    bench = load_bench()
    result = bench.run(models=6, days=30, seed=3, replicas=2, kinds=("volume_low", "volume_high"))  # type: ignore[attr-defined]
    seeded = result["seeded"]
    assert sorted(s["kind"] for s in seeded) == ["volume_high", "volume_high", "volume_low", "volume_low"]
    assert len({s["model"] for s in seeded}) == 4  # each anomaly on a model of its own
    for s in seeded:
        assert s["caught"], s
        assert "volume_anomaly" in s["failed"] and "OUTSIDE" in s["verdict"], s
    assert result["recall"]["default"] == 1.0
    normal = result["normal"]["default"]
    # 6 models × (30 - 7 warm-up) days of profile checks, 29 of schema checks, 30 of freshness
    checks = normal["checks"]
    assert checks["volume_anomaly"]["evaluations"] == checks["distribution_drift"]["evaluations"] == 6 * 23
    assert checks["column_schema_change"]["evaluations"] == 6 * 29
    assert checks["freshness"]["evaluations"] == 6 * 30
    assert normal["evaluations"] == sum(c["evaluations"] for c in checks.values())
    assert normal["rate"] == normal["failed"] / normal["evaluations"] < 0.02
    clean = result["clean_on_anomaly_days"]["default"]
    assert clean["evaluations"] > 0 and clean["failed"] == 0
    baseline = result["normal"]["baseline"]
    assert baseline["evaluations"] == normal["evaluations"] and baseline["rate"] is not None
    assert "seeded anomalies caught" in result["table"]
