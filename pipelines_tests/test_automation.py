"""Unattended runs: cron schedules, catch-up, landing sensor, declarative automation, alerts."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest

from dagster_sqlmesh_bridge import ProjectInfo, load_project, sqlmesh_assets
from dagster_sqlmesh_bridge.component.automation import build_defs, launched_by_a_person
from dagster_sqlmesh_bridge.component.transformation import build_plan_job
from dagster_sqlmesh_bridge.partition_runs import contiguous_key_ranges, keys_closed_between
from dagster_sqlmesh_bridge.schedules import (
    build_catch_up_sensor,
    catch_up_keys,
    cron_groups,
    cron_string,
    freshness_policy_for,
)
from pipelines.automation.alerts import build_failure_alert_sensor, redact
from pipelines.component.translation import PipelinesTranslator
from pipelines.platform.lake import Lake
from pipelines.platform.partitions import DAILY
from pipelines.platform.settings import Settings
from pipelines.shop import ingestion
from pipelines.shop.landing_sensor import (
    LandingCursor,
    build_landing_sensor,
    evaluate_landing,
    landing_job,
)
from pipelines.shop.resources import build_resources
from pipelines_tests.conftest import RANGE_END, RANGE_START, Deployment
from pipelines_tests.services import S3Env

Result = dg.EvaluateAutomationConditionsResult

D = "2026-03-02"
UTC_MIDNIGHT = datetime(2026, 3, 3, tzinfo=UTC)  # the tick right after D closed
REVENUE = dg.AssetKey(["marts", "daily_revenue"])
STG_ORDERS, STG_ITEMS = dg.AssetKey(["staging", "stg_orders"]), dg.AssetKey(["staging", "stg_order_items"])
STG_EVENTS, FUNNEL = dg.AssetKey(["staging", "stg_web_events"]), dg.AssetKey(["marts", "web_funnel"])


AutomatedTranslator = PipelinesTranslator  # the real translator carries conditions and freshness


def project() -> ProjectInfo:
    settings = Settings.from_env()
    return load_project(settings.sqlmesh_project_dir, settings.sqlmesh_gateway)


def automation_defs(deployment: Deployment) -> dg.Definitions:
    return deployment.definitions()  # the code location already includes the automation


# -- cron, schedule, catch-up ----------------------------------------------------------------


def test_cron_aliases_and_closed_days() -> None:
    assert cron_string("@daily") == "0 0 * * *"
    assert cron_string("@hourly") == "0 * * * *"
    assert cron_string("@weekly") == "0 0 * * 0"
    assert cron_string("@monthly") == "0 0 1 * *"
    assert cron_string(" 0  6 * * * ") == "0 6 * * *"
    with pytest.raises(ValueError, match="unsupported cron"):
        cron_string("every day")
    tick = datetime(2026, 3, 3, 6, tzinfo=UTC)
    assert keys_closed_between(DAILY, tick - timedelta(days=1), tick) == [D]
    assert keys_closed_between(DAILY, tick - timedelta(hours=1), tick) == []  # an hourly tick mid-day
    assert keys_closed_between(DAILY, tick - timedelta(days=7), tick) == [
        f"2026-02-{d}" for d in range(24, 29)
    ] + [
        "2026-03-01",
        D,
    ]
    assert contiguous_key_ranges(
        [f"2026-03-0{d}" for d in range(1, 6)], ["2026-03-05", "2026-03-01", "2026-03-02", "2026-03-04"]
    ) == [
        ("2026-03-01", "2026-03-02"),
        ("2026-03-04", "2026-03-05"),
    ]


def test_daily_schedule_requests_the_day_that_closed(deployment: Deployment) -> None:
    defs = automation_defs(deployment)
    job = defs.resolve_job_def("scheduled_daily")
    keys = set(job.asset_layer.selected_asset_keys)
    assert {STG_ORDERS, STG_EVENTS, REVENUE, FUNNEL, dg.AssetKey(["marts", "dim_customers"])} <= keys
    assert {ingestion.raw_asset_key(s) for s in ("orders", "order_items", "web_events", "fx_rates")} <= keys
    dg.Definitions.validate_loadable(defs)
    schedule = defs.resolve_schedule_def("scheduled_daily_schedule")
    assert schedule.cron_schedule == "0 0 * * *" and schedule.execution_timezone == "UTC"
    with dg.build_schedule_context(
        instance=deployment.instance,
        scheduled_execution_time=UTC_MIDNIGHT,
        repository_def=defs.get_repository_def(),
    ) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == D and request.tags["dagster/partition"] == D
    assert request.run_key == D
    assert request.tags["dagster/max_retries"] == "2"


# -- landing sensor --------------------------------------------------------------------------


def tick(sensor: dg.SensorDefinition, cursor: str | None) -> dg.SensorResult:
    # entered, so the resources (and the ephemeral instance) it opens are closed right here
    with dg.build_sensor_context(cursor=cursor) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def requested(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [(r.partition_key or "", r.run_key or "") for r in result.run_requests or []]


def put(lake: Lake, key: str, data: bytes, mtime: float | None = None) -> None:
    lake.put_bytes(data, key)
    if mtime is not None and not lake.is_s3:
        os.utime(lake.root / key, (mtime, mtime))


def test_landing_sensor_on_a_local_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINES_LAKE_URI", str(tmp_path / "lake"))
    lake = Lake(str(tmp_path / "lake"))
    now = [datetime(2026, 3, 10, 12, tzinfo=UTC)]
    sensor = build_landing_sensor(landing_job(), max_objects=3, clock=lambda: now[0])
    t0 = datetime(2026, 3, 9, tzinfo=UTC).timestamp()
    put(lake, f"landing/web_events/{D}/a.jsonl", b"{}", t0 + 1)
    put(lake, f"landing/web_events/{D}/b.jsonl", b"{}", t0 + 2)
    put(lake, "landing/web_events/not-a-date/x.jsonl", b"{}", t0 + 3)
    put(lake, "landing/web_events/2026-03-03/bad\x07name.jsonl", b"{}", t0 + 4)
    put(lake, "landing/orders/2026-03-03/y.jsonl", b"{}", t0 + 5)  # a database source
    put(lake, "landing/web_events/2026-03-04/c.jsonl", b"{}", t0 + 6)
    put(lake, "landing/web_events/2026-03-10/today.jsonl", b"{}", t0 + 7)

    first = tick(sensor, None)  # at most three objects: a, b, x
    assert [p for p, _ in requested(first)] == [D]
    cursor = LandingCursor.parse(first.cursor)
    assert cursor.last_modified == datetime.fromtimestamp(t0 + 3, tz=UTC)
    assert cursor.keys_at == {"landing/web_events/not-a-date/x.jsonl"}
    second = tick(sensor, first.cursor)  # the unsafe name and the database source are skipped
    assert [p for p, _ in requested(second)] == ["2026-03-04"]
    third = tick(sensor, second.cursor)  # today's file waits until the day has ended
    assert requested(third) == [] and LandingCursor.parse(third.cursor).pending
    assert tick(sensor, third.cursor).run_requests in (None, [])
    now[0] = datetime(2026, 3, 11, 1, tzinfo=UTC)
    fourth = tick(sensor, third.cursor)
    assert [p for p, _ in requested(fourth)] == ["2026-03-10"]
    assert LandingCursor.parse(fourth.cursor).pending == {}

    # the same file delivered again with the same mtime is not new; run keys are stable anyway
    put(lake, f"landing/web_events/{D}/a.jsonl", b"{}", t0 + 1)
    assert tick(sensor, fourth.cursor).run_requests in (None, [])
    assert requested(tick(sensor, None))[0][1] == requested(first)[0][1]
    [request] = first.run_requests or []
    assert request.asset_selection == [ingestion.raw_asset_key("web_events")]
    assert request.run_key == f"web_events:{D}:landing/web_events/{D}/b.jsonl:{int((t0 + 2) * 1e6)}-2"


def test_landing_sensor_on_s3(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINES_LAKE_URI", s3_env.uri("lake"))
    lake = Lake(s3_env.uri("lake"))
    sensor = build_landing_sensor(
        landing_job(), max_objects=2, clock=lambda: datetime(2026, 3, 10, tzinfo=UTC)
    )
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):  # same second: the cursor must keep all three apart
        put(lake, f"landing/web_events/{D}/{name}", name.encode())
    put(lake, f"landing/web_events/{D}/.hidden.jsonl", b"{}")
    put(lake, f"landing/web_events/{D}/nested/d.jsonl", b"{}")
    put(lake, "landing/web_events/2026-03-05/e.jsonl", b"e")

    now = datetime(2026, 3, 10, tzinfo=UTC)
    assert evaluate_landing(lake, LandingCursor(), 2, now, ["web_events"]).seen == 2  # bounded
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    for _ in range(4):  # six objects, two per tick
        result = tick(sensor, cursor)
        seen += requested(result)
        cursor = result.cursor
    # D twice (its files arrive over two ticks), the hidden and nested keys never
    assert sorted(p for p, _ in seen) == sorted([D, D, "2026-03-05"])
    newest = max(o.last_modified for o in lake.list("landing"))
    assert LandingCursor.parse(cursor).last_modified == newest
    assert all(key.startswith(f"web_events:{p}:landing/web_events/{p}/") for p, key in seen)
    assert tick(sensor, cursor).run_requests in (None, [])

    # re-delivered identical file: new LastModified, same ETag -> the same run key (one run)
    time.sleep(1.1)
    put(lake, "landing/web_events/2026-03-05/e.jsonl", b"e")
    again = requested(tick(sensor, cursor))
    assert again == [k for k in seen if k[0] == "2026-03-05"]


# -- declarative automation and freshness ----------------------------------------------------


def test_freshness_policies_follow_the_cron() -> None:
    info = project()
    revenue = next(m for m in info.internal_models if m.table == "daily_revenue")
    policy = freshness_policy_for(revenue)
    assert isinstance(policy, dg.FreshnessPolicy)
    assert policy.deadline_cron == "0 6 * * *"
    staging = freshness_policy_for(next(m for m in info.internal_models if m.table == "stg_orders"))
    assert isinstance(staging, dg.FreshnessPolicy) and staging.deadline_cron == "0 6 * * *"
    weekly = freshness_policy_for(replace(revenue, cron="@weekly"))
    assert weekly is not None and weekly.fail_window.to_timedelta() == timedelta(days=7, hours=6)


def test_ingested_partition_requests_staging_and_failed_blocking_check_holds_back(
    deployment: Deployment,
) -> None:
    settings = Settings.from_env()
    info = project()
    translator = AutomatedTranslator()
    defs = dg.Definitions.merge(
        ingestion.defs,
        dg.Definitions(
            assets=[sqlmesh_assets(info, translator, restate_when=launched_by_a_person)],
            jobs=[build_plan_job(info, translator)],
            resources=build_resources(settings),
        ),
        build_defs(info, translator),
    )
    graph = defs.resolve_asset_graph()
    assert graph.get(REVENUE).freshness_policy == freshness_policy_for(
        info.models[next(f for f, m in info.models.items() if m.table == "daily_revenue")]
    )
    instance = deployment.instance
    at = datetime(2026, 3, 3, 6, tzinfo=UTC)  # D is the latest day

    def evaluate(previous: Result | None = None) -> Result:
        nonlocal at
        at += timedelta(minutes=1)
        cursor = previous.cursor if previous else None
        return dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=at, cursor=cursor
        )

    before = evaluate()
    assert before.get_requested_partitions(STG_EVENTS) == set()
    raw_events = ingestion.raw_asset_key("web_events")
    assert deployment.run([raw_events], start=D, defs=defs).success
    ingested = evaluate(before)
    assert ingested.get_requested_partitions(STG_EVENTS) == {D}
    assert ingested.get_requested_partitions(STG_ORDERS) == set()
    assert ingested.get_requested_partitions(FUNNEL) == set()

    # what the sensor would launch (computes what is due, restates nothing): staging runs for
    # real, its audits pass, the mart follows
    due_only = {"ops": {"sqlmesh_models": {"config": {"restate": False}}}}
    assert deployment.run([STG_EVENTS], start=D, defs=defs, run_config=due_only).success
    staged = evaluate(ingested)
    assert staged.get_requested_partitions(FUNNEL) == {D}

    idle = evaluate(staged)
    assert idle.total_requested == 0

    # staging updates again but one blocking audit fails (an injected fault): the mart waits...
    specs = [c for a in defs.assets or [] for c in getattr(a, "check_specs", []) if c.asset_key == STG_EVENTS]
    blocking = sorted(c.key.name for c in specs if c.blocking)
    assert "accepted_values" in blocking and len(blocking) > 1
    instance.report_runless_asset_event(dg.AssetMaterialization(STG_EVENTS, partition=D))
    for name in blocking:
        passed = name != "accepted_values"
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(STG_EVENTS, name, passed=passed))
    blocked = evaluate(idle)
    assert blocked.get_requested_partitions(FUNNEL) == set()
    # ...until staging runs again with its audits passing: a person's run restates, as SQLMesh
    # does, so the mart is recomputed from the new staging in the same run (nothing left to request)
    rerun = deployment.run([STG_EVENTS], start=D, defs=defs)
    assert rerun.success
    assert (FUNNEL, D) in {(e.asset_key, e.partition) for e in rerun.get_asset_materialization_events()}
    released = evaluate(blocked)
    assert released.get_requested_partitions(FUNNEL) == set()


# -- failure alerts --------------------------------------------------------------------------


class _Webhook(BaseHTTPRequestHandler):
    bodies: list[bytes] = []
    statuses: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[type[_Webhook]]:
    handler = type("Webhook", (_Webhook,), {"bodies": [], "statuses": [503]})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_failed_run_alert_goes_to_lake_and_webhook_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: type[_Webhook]
) -> None:
    secret = "pg-Sup3r-s3cret-value"
    monkeypatch.setenv("PIPELINES_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("SHOP_DB_PASSWORD", secret)
    monkeypatch.setenv("PIPELINES_ALERT_WEBHOOK_URL", webhook.url)

    @dg.asset(partitions_def=DAILY)
    def flaky_source() -> None:
        raise RuntimeError(f"could not connect to postgresql://shop:{secret}@db.internal:5432/shop")

    job = dg.Definitions(assets=[flaky_source], jobs=[dg.define_asset_job("nightly")]).resolve_job_def(
        "nightly"
    )
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, partition_key=D, raise_on_error=False)
        assert not result.success
        with dg.build_run_status_sensor_context(
            sensor_name="run_failure_alerts",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
        ) as context:
            build_failure_alert_sensor()(context.for_run_failure())

    lake = Lake(str(tmp_path / "lake"))
    [stored] = list(lake.list("alerts"))
    assert stored.key.endswith(f"/{result.run_id}.json")
    alert = json.loads(lake.get_bytes(stored.key))
    assert alert["run_id"] == result.run_id and alert["job"] == "nightly"
    assert alert["tags"]["dagster/partition"] == D
    [step] = alert["failed_steps"]
    assert step["step_key"] == "flaky_source"
    assert "could not connect to postgresql://shop:***@db.internal" in step["error"]
    assert stored.key == f"alerts/{datetime.fromisoformat(alert['failed_at']).date()}/{result.run_id}.json"
    assert len(webhook.bodies) == 2  # a 503 first, then delivered
    assert json.loads(webhook.bodies[-1]) == alert
    for text in [lake.get_bytes(stored.key).decode(), *(b.decode() for b in webhook.bodies)]:
        assert secret not in text and webhook.url not in text


def test_redaction_covers_common_credential_shapes() -> None:
    text = redact(
        "dsn=host=db password=hunter22 user=x; https://u:p4ss@example.com/x "
        "token: abc123 AKIAABCDEFGHIJKLMNOP",
        environ={"MY_API_TOKEN": "zzz-very-secret", "HOME": "/root"},
    )
    assert "hunter22" not in text and "p4ss" not in text and "abc123" not in text and "AKIA" not in text
    assert redact("key zzz-very-secret here", environ={"MY_API_TOKEN": "zzz-very-secret"}) == "key *** here"


# -- two unattended days ---------------------------------------------------------------------


def state_intervals(model: str) -> list[tuple[str, str]]:
    from sqlmesh import Context
    from sqlmesh.utils.date import to_ds

    ctx = Context(paths=str(Settings.from_env().sqlmesh_project_dir))
    try:
        env = ctx.state_sync.get_environment("prod")
        info = next(s for s in env.snapshots if s.name.endswith(f'"{model}"'))
        snapshot = ctx.state_sync.get_snapshots([info.snapshot_id])[info.snapshot_id]
        return [(to_ds(s), to_ds(e)) for s, e in snapshot.intervals]
    finally:
        ctx.close()


def test_two_scheduled_days_compute_one_day_each_then_catch_up_finds_gaps(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = automation_defs(deployment)
    schedule = defs.resolve_schedule_def("scheduled_daily_schedule")
    job = defs.resolve_job_def("scheduled_daily")
    results = []
    for tick_time in (UTC_MIDNIGHT, UTC_MIDNIGHT + timedelta(days=1)):
        with dg.build_schedule_context(
            instance=deployment.instance,
            scheduled_execution_time=tick_time,
            repository_def=defs.get_repository_def(),
        ) as context:
            [request] = schedule.evaluate_tick(context).run_requests
        tags = {k: v for k, v in request.tags.items() if not k.startswith("dagster/partition")}
        result = job.execute_in_process(
            instance=deployment.instance, partition_key=request.partition_key, tags=tags, raise_on_error=False
        )
        failures = [str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure]
        assert result.success, failures
        results.append(result)

    def intervals(result: dg.ExecuteInProcessResult) -> list[list[str]]:
        [mat] = [e for e in result.get_asset_materialization_events() if e.asset_key == REVENUE]
        return mat.materialization.metadata["sqlmesh/intervals"].value  # type: ignore[return-value]

    assert intervals(results[0]) == [["2026-03-02 00:00", "2026-03-03 00:00"]]
    assert intervals(results[1]) == [["2026-03-03 00:00", "2026-03-04 00:00"]]  # only the new day
    assert state_intervals("daily_revenue") == [("2026-03-02", "2026-03-04")]

    # three days later, with the schedule off: the gaps around D and D+1 are caught up in one run each
    info, translator = project(), PipelinesTranslator()
    [group] = [g for g in cron_groups(info, translator) if g.partitioned]
    sensor = build_catch_up_sensor(
        [(group, group.job(), catch_up_keys(group, info, translator))],
        clock=lambda: datetime(2026, 3, 6, 12, tzinfo=UTC),
        lookback_days=5,
    )
    with dg.build_sensor_context(instance=deployment.instance) as context:
        result = sensor(context)
    ranges = sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests or [])
    assert ranges == [("2026-03-01", "2026-03-01"), ("2026-03-04", "2026-03-05")]
