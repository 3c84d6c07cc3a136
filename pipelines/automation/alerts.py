"""Failed runs become a structured JSON alert in the lake, and optionally a webhook POST.

The alert names the run, job, failed steps with their error messages, partition tags and
time; it never carries run config, resources or environment. Error messages are scrubbed of
credential-shaped text (URL user:password, ``password=...``) and of the values of secret-named
environment variables, since a driver error may echo a connection string.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from pipelines.platform.lake import Lake
from pipelines.platform.settings import Settings

WEBHOOK_ENV = "PIPELINES_ALERT_WEBHOOK_URL"
ALERT_VERSION = 1
MAX_MESSAGE = 4000
_RUN_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_KEY|ACCESS_KEY|WEBHOOK)", re.I
)
_URL_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]+:)[^\s@/]+@", re.I)
_ASSIGNED_SECRET = re.compile(
    r"\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?access[_-]?key)"
    r"(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s,;&]+)",
    re.I,
)
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")
_ALERT_TAGS = (
    "dagster/partition",
    "dagster/asset_partition_range_start",
    "dagster/asset_partition_range_end",
    "dagster/backfill",
    "dagster/schedule_name",
    "dagster/sensor_name",
    "dagster/retry_number",
    "dagster/will_retry",
    "pipelines/trigger",
)


def redact(text: str, environ: dict[str, str] | None = None) -> str:
    """``text`` without anything that looks like a credential."""
    environ = dict(os.environ if environ is None else environ)
    for name, value in environ.items():
        if _SECRET_NAME.search(name) and len(value) >= 6:
            text = text.replace(value, "***")
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = _ASSIGNED_SECRET.sub(r"\1\2***", text)
    return _AWS_KEY_ID.sub("***", text)


def _message(text: str) -> str:
    text = redact(text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " …(truncated)"


def _error_text(error: Any, depth: int = 5) -> str:
    """The error's message and its causes' (Dagster wraps user errors; the cause says why)."""
    parts = []
    while error is not None and len(parts) < depth:
        parts.append(error.message.strip())
        error = error.cause
    return "\ncaused by: ".join(p for p in parts if p)


def build_alert(context: dg.RunFailureSensorContext, now: datetime | None = None) -> dict[str, Any]:
    """The alert document for a failed run."""
    run = context.dagster_run
    record = context.instance.get_run_record_by_id(run.run_id)
    ended = record.end_time if record and record.end_time else None
    failed_at = datetime.fromtimestamp(ended, tz=UTC) if ended else (now or datetime.now(UTC))
    steps = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        text = _error_text(data.error)
        if data.user_failure_data and data.user_failure_data.description:
            text = text or data.user_failure_data.description
        steps.append({"step_key": event.step_key, "error": _message(text)})
    return {
        "version": ALERT_VERSION,
        "kind": "run_failure",
        "run_id": run.run_id,
        "job": run.job_name,
        "environment": os.environ.get("PIPELINES_ENV", "local"),
        "failed_at": failed_at.isoformat(),
        "message": _message(context.failure_event.message or ""),
        "failed_steps": steps,
        "tags": {k: v for k, v in run.tags.items() if k in _ALERT_TAGS},
    }


def alert_key(alert: dict[str, Any]) -> str:
    """``alerts/<YYYY-MM-DD>/<run_id>.json`` (the run id is checked: it becomes a path)."""
    run_id = str(alert["run_id"])
    if not _RUN_ID.match(run_id):
        raise ValueError(f"unexpected run id {run_id!r}")
    day = datetime.fromisoformat(alert["failed_at"]).astimezone(UTC).date().isoformat()
    return f"alerts/{day}/{run_id}.json"


def post_alert(url: str, alert: dict[str, Any], attempts: int = 3, timeout: float = 5.0) -> bool:
    """POST the alert as JSON; retry 5xx, 429 and connection errors. True once delivered."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"{WEBHOOK_ENV} must be an http(s) URL")
    body = json.dumps(alert).encode()
    for attempt in range(attempts):
        request = urllib.request.Request(  # noqa: S310 (http(s) checked above)
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (checked above)
                if 200 <= response.status < 300:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                return False
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            pass
        if attempt + 1 < attempts:
            time.sleep(0.5 * 2**attempt)
    return False


def deliver(alert: dict[str, Any], lake: Lake, webhook_url: str | None, log: Any) -> str:
    """Write the alert to the lake, then POST it if a webhook is configured; returns its key."""
    key = alert_key(alert)
    lake.put_bytes(json.dumps(alert, indent=2).encode(), key)
    log.info(f"run failure alert written to {key}")
    if webhook_url:
        if post_alert(webhook_url, alert):
            log.info("run failure alert posted to the webhook")
        else:  # the URL may hold a token: never log it
            log.error(f"could not post the run failure alert to {WEBHOOK_ENV}; it is in the lake at {key}")
    return key


def build_failure_alert_sensor(
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="run_failure_alerts",
        default_status=default_status,
        minimum_interval_seconds=30,
        description=f"Writes a JSON alert to alerts/<day>/<run_id>.json (and POSTs to {WEBHOOK_ENV}).",
    )
    def _alerts(context: dg.RunFailureSensorContext) -> None:
        alert = build_alert(context)
        lake = Lake(Settings.from_env().lake_uri)
        deliver(alert, lake, os.environ.get(WEBHOOK_ENV, "").strip() or None, context.log)

    return _alerts
