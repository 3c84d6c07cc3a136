"""S3 lifecycle rules for the lake's zones, declared in ``lifecycle_rules.yaml``, applied safely.

S3 keeps a single lifecycle configuration per bucket, and a PUT replaces all of it. So we read the
current rules first. We replace only the rules this lake owns (IDs ``pipelines:<lake prefix>:…``)
and keep everyone else's. Nothing is written when the owned rules already match, so the
command is safe to run on every deploy.

    python -m pipelines.platform.lifecycle                  # lake from PIPELINES_LAKE_URI
    python -m pipelines.platform.lifecycle --dry-run        # print the change, write nothing
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from pipelines.platform.lake import Lake, s3_client

DEFAULT_RULES_PATH = Path(__file__).resolve().parent / "lifecycle_rules.yaml"
STORAGE_CLASSES = frozenset(
    {"STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"}
)
# DuckLake reads any of its data files at any time; tiering or expiring them breaks queries.
PROTECTED_PREFIXES = ("warehouse/",)
_RULE_KEYS = frozenset(
    {
        "id",
        "prefix",
        "transitions",
        "expiration_days",
        "noncurrent_expiration_days",
        "abort_incomplete_multipart_upload_days",
    }
)
# What a rule on a protected prefix may do: act on versions no reader sees any more.
_NONCURRENT_ONLY_KEYS = frozenset(
    {"id", "prefix", "noncurrent_expiration_days", "abort_incomplete_multipart_upload_days"}
)
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_=-]+)*/$")


class LifecycleError(ValueError):
    """The rules file or the lake URI cannot be turned into lifecycle rules."""


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LifecycleError(f"{what} must be a whole number of days >= 1, got {value!r}")
    return value


def load_rules(path: Path | None = None) -> list[dict[str, Any]]:
    """Read and check the rules file; returns the rules as written (lake-relative prefixes)."""
    path = path or DEFAULT_RULES_PATH
    doc = yaml.safe_load(Path(path).read_text()) or {}
    rules = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(rules, list):
        raise LifecycleError(f"{path}: expected a top-level 'rules:' list")
    seen: set[str] = set()
    for rule in rules:
        rid = rule.get("id")
        if not isinstance(rid, str) or not _RULE_ID.match(rid) or rid in seen:
            raise LifecycleError(f"{path}: rule id {rid!r} must be unique, lowercase and dashed")
        seen.add(rid)
        unknown = set(rule) - _RULE_KEYS
        if unknown:
            raise LifecycleError(f"{path}: rule {rid}: unknown keys {sorted(unknown)}")
        prefix = rule.get("prefix")
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise LifecycleError(f"{path}: rule {rid}: prefix {prefix!r} must look like 'zone/'")
        if prefix.startswith(PROTECTED_PREFIXES) and not set(rule) <= _NONCURRENT_ONLY_KEYS:
            raise LifecycleError(
                f"{path}: rule {rid}: {prefix!r} holds DuckLake data files, which must stay readable "
                "(only noncurrent_expiration_days and abort_incomplete_multipart_upload_days may apply)"
            )
        last_days = 0
        for step in rule.get("transitions", []):
            days = _positive_int(step.get("days"), f"rule {rid}: transition days")
            if days <= last_days:
                raise LifecycleError(f"{path}: rule {rid}: transitions must be in increasing days")
            last_days = days
            if step.get("storage_class") not in STORAGE_CLASSES:
                raise LifecycleError(
                    f"{path}: rule {rid}: storage_class {step.get('storage_class')!r} "
                    f"is not one of {sorted(STORAGE_CLASSES)}"
                )
        if "expiration_days" in rule:
            expiry = _positive_int(rule["expiration_days"], f"rule {rid}: expiration_days")
            if expiry <= last_days:
                raise LifecycleError(f"{path}: rule {rid}: expiry must come after every transition")
        if "abort_incomplete_multipart_upload_days" in rule:
            _positive_int(rule["abort_incomplete_multipart_upload_days"], f"rule {rid}: abort days")
        if "noncurrent_expiration_days" in rule:
            _positive_int(rule["noncurrent_expiration_days"], f"rule {rid}: noncurrent_expiration_days")
        if not rule.get("transitions") and not {"expiration_days", "noncurrent_expiration_days"} & set(rule):
            raise LifecycleError(
                f"{path}: rule {rid}: needs transitions, expiration_days or noncurrent_expiration_days"
            )
    return rules


def _owner_tag(lake_prefix: str) -> str:
    return f"pipelines:{lake_prefix}:" if lake_prefix else "pipelines::"


def to_s3_rules(rules: list[dict[str, Any]], lake_prefix: str) -> list[dict[str, Any]]:
    """The boto3 ``Rules`` for ``rules`` under ``lake_prefix`` (IDs carry the owning lake)."""
    base = f"{lake_prefix}/" if lake_prefix else ""
    out: list[dict[str, Any]] = []
    for rule in rules:
        s3_rule: dict[str, Any] = {
            "ID": _owner_tag(lake_prefix) + rule["id"],
            "Status": "Enabled",
            "Filter": {"Prefix": base + rule["prefix"]},
        }
        if rule.get("transitions"):
            s3_rule["Transitions"] = [
                {"Days": t["days"], "StorageClass": t["storage_class"]} for t in rule["transitions"]
            ]
        if "expiration_days" in rule:
            s3_rule["Expiration"] = {"Days": rule["expiration_days"]}
        if "noncurrent_expiration_days" in rule:
            s3_rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["noncurrent_expiration_days"]}
        if "abort_incomplete_multipart_upload_days" in rule:
            s3_rule["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": rule["abort_incomplete_multipart_upload_days"]
            }
        out.append(s3_rule)
    return out


def _canonical(rule: dict[str, Any]) -> dict[str, Any]:
    """The parts of a rule we manage, in a form that compares equal however S3 echoes it."""
    prefix = rule.get("Filter", {}).get("Prefix", rule.get("Prefix", ""))
    return {
        "status": rule.get("Status"),
        "prefix": prefix,
        "transitions": sorted(
            (int(t.get("Days", 0)), t.get("StorageClass")) for t in rule.get("Transitions", [])
        ),
        "expiration": rule.get("Expiration", {}).get("Days"),
        "noncurrent": rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays"),
        "abort": rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation"),
    }


def current_rules(client: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        return client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return []
        raise


def apply_lifecycle(
    lake_uri: str,
    rules_path: Path | str | None = None,
    client: Any | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Make the bucket's rules for this lake match the rules file.

    Returns ``bucket``, ``prefix``, ``changed`` and the rule IDs ``added``, ``updated``,
    ``removed`` and ``unchanged``.
    """
    if not lake_uri.strip():
        raise LifecycleError("no lake given: set PIPELINES_LAKE_URI=s3://bucket/prefix")
    lake = Lake(lake_uri.strip())
    if not lake.is_s3:
        raise LifecycleError(
            f"lifecycle rules apply to an S3 lake only; PIPELINES_LAKE_URI={lake_uri!r} is a "
            "local folder (set it to s3://bucket/prefix)"
        )
    if not lake.bucket:
        raise LifecycleError(f"PIPELINES_LAKE_URI={lake_uri!r} names no bucket")
    desired = to_s3_rules(load_rules(Path(rules_path) if rules_path else None), lake.prefix)
    client = client or s3_client()
    existing = current_rules(client, lake.bucket)
    owner = _owner_tag(lake.prefix)
    ours = {r["ID"]: r for r in existing if str(r.get("ID", "")).startswith(owner)}
    others = [r for r in existing if not str(r.get("ID", "")).startswith(owner)]
    wanted = {r["ID"]: r for r in desired}

    both = set(wanted) & set(ours)
    same = {rid for rid in both if _canonical(wanted[rid]) == _canonical(ours[rid])}
    report: dict[str, Any] = {
        "bucket": lake.bucket,
        "prefix": lake.prefix,
        "added": sorted(set(wanted) - set(ours)),
        "removed": sorted(set(ours) - set(wanted)),
        "updated": sorted(both - same),
        "unchanged": sorted(same),
    }
    report["changed"] = bool(report["added"] or report["removed"] or report["updated"])
    if report["changed"] and not dry_run:
        rules = others + desired
        if rules:
            client.put_bucket_lifecycle_configuration(
                Bucket=lake.bucket, LifecycleConfiguration={"Rules": rules}
            )
        else:
            client.delete_bucket_lifecycle(Bucket=lake.bucket)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.platform.lifecycle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--lake-uri",
        default=os.environ.get("PIPELINES_LAKE_URI", ""),
        help="s3://bucket/prefix (default: $PIPELINES_LAKE_URI)",
    )
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES_PATH, help="rules YAML file")
    parser.add_argument("--dry-run", action="store_true", help="report the change, write nothing")
    args = parser.parse_args(argv)
    try:
        report = apply_lifecycle(args.lake_uri, args.rules, dry_run=args.dry_run)
    except LifecycleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**report, "dry_run": args.dry_run}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
