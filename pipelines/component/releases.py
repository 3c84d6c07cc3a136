"""Release notes: one record per applied SQLMesh plan, in the audit trail of the lake.

``audit/releases/YYYY/MM/DD/<stamp>-<run_id>.json`` holds who applied it, when, the git commit,
and per model the old and new fingerprint and version, the change category, the recomputed
intervals and the diff; ``<same name>.md`` beside it says the same for people, CHANGELOG style.
The keys sort by time, so the newest release is the last key. ``pipelines releases`` lists them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster_sqlmesh_bridge.plan_outcome import PlanOutcome
from pipelines.platform.lake import Lake

RELEASES_PREFIX = "audit/releases"
SCHEMA_VERSION = 1
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def git_commit(project_dir: Path | str | None = None) -> str | None:
    """The commit of the code being applied: ``PIPELINES_GIT_COMMIT`` (set it when building the
    image, which has no ``.git``), ``GITHUB_SHA`` in GitHub Actions, else ``git rev-parse HEAD``."""
    for var in ("PIPELINES_GIT_COMMIT", "GITHUB_SHA"):
        value = os.environ.get(var, "").strip().lower()
        if _COMMIT.match(value):
            return value
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project_dir or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out if _COMMIT.match(out) else None


def build_release(
    outcome: PlanOutcome,
    *,
    run_id: str,
    applied_by: str | None,
    git_commit: str | None,
    applied_at: datetime | None = None,
) -> dict[str, Any]:
    """Only applied plans are recorded: a plan whose build fails leaves prod untouched and has no
    release."""
    if not _RUN_ID.match(run_id):
        raise ValueError(f"invalid run id {run_id!r}")
    when = (applied_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "schema_version": SCHEMA_VERSION,
        "release_id": f"{when:%Y%m%dT%H%M%S%fZ}-{run_id}",
        "applied_at": when.isoformat(),
        "applied_by": applied_by,
        "run_id": run_id,
        "git_commit": git_commit,
        "environment": outcome.environment,
        "plan_id": outcome.plan_id,
        "created_environment": outcome.created,
        "models": [
            {
                "model": c.model,
                "change_category": c.change_category,
                "old_fingerprint": c.old_fingerprint,
                "new_fingerprint": c.new_fingerprint,
                "old_version": c.old_version,
                "new_version": c.new_version,
                "recomputed_intervals": [list(i) for i in c.recomputed],
                "diff": c.diff,
            }
            for c in outcome.changes
        ],
    }


def release_keys(record: Mapping[str, Any]) -> tuple[str, str]:
    """(JSON key, markdown key) of a release record."""
    release_id = str(record["release_id"])
    if not re.fullmatch(r"\d{8}T\d{12}Z-[A-Za-z0-9_-]{1,64}", release_id):
        raise ValueError(f"invalid release id {release_id!r}")
    when = datetime.fromisoformat(str(record["applied_at"])).astimezone(UTC)
    base = f"{RELEASES_PREFIX}/{when:%Y/%m/%d}/{release_id}"
    return f"{base}.json", f"{base}.md"


def render_markdown(record: Mapping[str, Any]) -> str:
    """The release as a CHANGELOG entry."""
    commit = record.get("git_commit") or "unknown commit"
    lines = [
        f"## {record['applied_at'][:19].replace('T', ' ')} UTC — `{record['environment']}`",
        "",
        f"Applied by {record.get('applied_by') or 'unknown'} (Dagster run `{record['run_id']}`) "
        f"from commit `{commit}`"
        + (", creating the environment." if record.get("created_environment") else "."),
        "",
    ]
    models = record.get("models") or []
    if not models:
        lines.append("No model changed.")
    else:
        lines += [
            "| model | change | version | fingerprint | recomputed |",
            "| --- | --- | --- | --- | --- |",
        ]
        for m in models:
            intervals = ", ".join(f"{s[:10]} → {e[:10]}" for s, e in m["recomputed_intervals"]) or "—"
            lines.append(
                f"| `{m['model']}` | {m['change_category'].lower().replace('_', '-')} "
                f"| {m['old_version'] or '—'} → {m['new_version'] or '—'} "
                f"| {m['old_fingerprint'] or '—'} → {m['new_fingerprint'] or '—'} | {intervals} |"
            )
        for m in models:
            if m["diff"]:
                lines += ["", f"### `{m['model']}`", "", "```diff", m["diff"].strip("\n"), "```"]
    return "\n".join(lines) + "\n"


def write_release(lake: Lake, record: Mapping[str, Any]) -> tuple[str, str]:
    """Write the markdown, then the JSON record (what ``list_releases`` reads): a record that
    exists is whole, and a failed write leaves none, so the plan job's retry writes it."""
    json_key, md_key = release_keys(record)
    lake.put_bytes(render_markdown(record).encode(), md_key)
    lake.put_bytes((json.dumps(record, sort_keys=True) + "\n").encode(), json_key)
    return json_key, md_key


def list_releases(lake: Lake, limit: int | None = None) -> list[dict[str, Any]]:
    """Release records, newest first."""
    keys = sorted(
        (o.key for o in lake.list(RELEASES_PREFIX) if o.key.endswith(".json")),
        key=lambda k: k.rsplit("/", 1)[-1],
        reverse=True,
    )
    if limit is not None:
        keys = keys[:limit]
    return [json.loads(lake.get_bytes(k)) for k in keys]


def format_releases(records: list[dict[str, Any]], lake: Lake) -> str:
    """What ``pipelines releases`` prints: one block per release, newest first."""
    if not records:
        return f"no releases recorded under {lake.url(RELEASES_PREFIX)}"
    out = []
    for r in records:
        commit = (r.get("git_commit") or "?")[:12]
        out.append(
            f"{r['applied_at'][:19]}Z  {r['environment']}  commit {commit}  by {r.get('applied_by') or '?'}  "
            f"({len(r['models'])} model(s))  {lake.url(release_keys(r)[1])}"
        )
        for m in r["models"]:
            out.append(
                f"    {m['change_category']:<22} {m['model']:<36} "
                f"{m['old_version'] or '-'} -> {m['new_version'] or '-'}"
            )
    return "\n".join(out)
