"""Lifecycle rules against a real S3 API (moto over HTTP), plus DuckDB reading that same S3."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.platform.duckdb_s3 import configure_s3
from pipelines.platform.lifecycle import (
    DEFAULT_RULES_PATH,
    LifecycleError,
    apply_lifecycle,
    load_rules,
    main,
)
from pipelines_tests.services import S3Env


def _bucket_rules(env: S3Env) -> dict[str, dict]:
    rules = env.client().get_bucket_lifecycle_configuration(Bucket=env.bucket)["Rules"]
    return {r["ID"]: r for r in rules}


def test_apply_twice_changes_nothing_the_second_time(s3_env: S3Env) -> None:
    first = apply_lifecycle(s3_env.uri("prod"))
    assert first["changed"] is True
    assert first["added"] == sorted(f"pipelines:prod:{r['id']}" for r in load_rules())
    assert "pipelines:prod:raw-tiering" in first["added"]

    second = apply_lifecycle(s3_env.uri("prod"))
    assert second["changed"] is False
    assert second["added"] == second["updated"] == second["removed"] == []
    assert second["unchanged"] == first["added"]


def test_bucket_rules_match_the_yaml_under_the_lake_prefix(s3_env: S3Env) -> None:
    apply_lifecycle(s3_env.uri("prod/lake"))
    on_bucket = _bucket_rules(s3_env)
    declared = load_rules()
    assert len(on_bucket) == len(declared)
    for rule in declared:
        s3_rule = on_bucket[f"pipelines:prod/lake:{rule['id']}"]
        assert s3_rule["Status"] == "Enabled"
        assert s3_rule["Filter"]["Prefix"] == f"prod/lake/{rule['prefix']}"
        assert [(t["Days"], t["StorageClass"]) for t in s3_rule.get("Transitions", [])] == [
            (t["days"], t["storage_class"]) for t in rule.get("transitions", [])
        ]
        assert s3_rule.get("Expiration", {}).get("Days") == rule.get("expiration_days")
        assert s3_rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == rule.get(
            "noncurrent_expiration_days"
        )
    prefixes = {r["Filter"]["Prefix"] for r in on_bucket.values()}
    assert "prod/lake/raw/" in prefixes and "prod/lake/quarantine/" in prefixes
    # reports/ and warehouse/ only lose old versions: nothing current expires or changes class.
    for s3_rule in on_bucket.values():
        if s3_rule["Filter"]["Prefix"].startswith(("prod/lake/reports/", "prod/lake/warehouse/")):
            assert "Expiration" not in s3_rule and "Transitions" not in s3_rule
            assert s3_rule["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 1


def test_edits_replace_only_this_lakes_rules(s3_env: S3Env, tmp_path: Path) -> None:
    client = s3_env.client()
    foreign = {
        "ID": "other-team-tmp",
        "Status": "Enabled",
        "Filter": {"Prefix": "tmp/"},
        "Expiration": {"Days": 1},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=s3_env.bucket, LifecycleConfiguration={"Rules": [foreign]}
    )
    apply_lifecycle(s3_env.uri("prod"))
    apply_lifecycle(s3_env.uri("staging"))
    assert len(_bucket_rules(s3_env)) == 1 + 2 * len(load_rules())

    edited = tmp_path / "rules.yaml"
    edited.write_text("rules:\n  - id: quarantine-expiry\n    prefix: quarantine/\n    expiration_days: 30\n")
    report = apply_lifecycle(s3_env.uri("prod"), rules_path=edited)
    assert report["changed"] is True
    assert report["updated"] == ["pipelines:prod:quarantine-expiry"]
    assert report["removed"] == sorted(
        f"pipelines:prod:{r['id']}" for r in load_rules() if r["id"] != "quarantine-expiry"
    )

    rules = _bucket_rules(s3_env)
    assert rules["other-team-tmp"]["Expiration"]["Days"] == 1
    assert rules["pipelines:prod:quarantine-expiry"]["Expiration"]["Days"] == 30
    assert "pipelines:prod:raw-tiering" not in rules
    assert {"pipelines:staging:raw-tiering", "pipelines:staging:quarantine-expiry"} <= set(rules)


def test_dry_run_reports_without_writing(s3_env: S3Env) -> None:
    report = apply_lifecycle(s3_env.uri(), dry_run=True)
    assert report["changed"] is True and report["prefix"] == ""
    assert report["added"] == sorted(f"pipelines::{r['id']}" for r in load_rules())
    with pytest.raises(s3_env.client().exceptions.ClientError, match="NoSuchLifecycle"):
        s3_env.client().get_bucket_lifecycle_configuration(Bucket=s3_env.bucket)


def test_cli_applies_from_the_environment(
    s3_env: S3Env,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PIPELINES_LAKE_URI", s3_env.uri("prod"))
    assert main([]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is True and out["bucket"] == s3_env.bucket
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False


def test_a_local_lake_is_rejected_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(LifecycleError, match="S3 lake only.*local folder"):
        apply_lifecycle(str(tmp_path / "lake"))
    with pytest.raises(LifecycleError, match="PIPELINES_LAKE_URI"):
        apply_lifecycle("")
    assert main(["--lake-uri", str(tmp_path)]) == 2
    assert "S3 lake only" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("prefix: warehouse/\n    expiration_days: 5", "DuckLake data files"),
        ("prefix: warehouse/\n    transitions: [{days: 5, storage_class: GLACIER}]", "DuckLake data files"),
        ("prefix: raw/\n    transitions: [{days: 5, storage_class: COLD}]", "storage_class"),
        ("prefix: ../raw/\n    expiration_days: 5", "prefix"),
        ("prefix: raw/\n    expiration_days: 0", "days >= 1"),
        ("prefix: raw/", "needs transitions, expiration_days or noncurrent"),
        ("prefix: raw/\n    noncurrent_expiration_days: 0", "days >= 1"),
    ],
)
def test_bad_rules_are_refused(tmp_path: Path, rule: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f"rules:\n  - id: bad\n    {rule}\n")
    with pytest.raises(LifecycleError, match=message):
        load_rules(path)


def test_shipped_rules_file_is_valid() -> None:
    ids = [r["id"] for r in load_rules(DEFAULT_RULES_PATH)]
    assert ids[:3] == ["raw-tiering", "quarantine-expiry", "compute-logs-expiry"]
    # DuckLake's cleaned-up files (noncurrent versions under warehouse/) do not stay forever.
    warehouse = [r for r in load_rules(DEFAULT_RULES_PATH) if r["prefix"] == "warehouse/"]
    assert [set(r) for r in warehouse] == [
        {"id", "prefix", "noncurrent_expiration_days", "abort_incomplete_multipart_upload_days"}
    ]


def test_a_noncurrent_only_rule_may_cover_the_warehouse(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - id: wh\n    prefix: warehouse/\n    noncurrent_expiration_days: 3\n")
    assert load_rules(path)[0]["noncurrent_expiration_days"] == 3


def test_duckdb_httpfs_reads_parquet_from_the_s3_server(s3_env: S3Env) -> None:
    """The exact S3 path DuckDB uses in prod (secret from AWS_* env) works over HTTP."""
    table = pa.table({"order_id": [1, 2, 3], "amount": [9.5, 20.0, 0.5]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    key = "raw/orders/ds=2026-11-20/data.parquet"
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=key, Body=buf.getvalue())

    con = duckdb.connect()
    try:
        configure_s3(con)
        rows = con.execute(
            f"SELECT count(*), sum(amount) FROM read_parquet('s3://{s3_env.bucket}/{key}')"
        ).fetchone()
    finally:
        con.close()
    assert rows == (3, 30.0)
