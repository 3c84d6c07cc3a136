"""Secrets for a CI job, read with the job's OIDC-assumed role instead of stored in CI.

The pull request's plan check (``.github/workflows/ci.yml``) holds no static key or password:
the job assumes the ``PlanCheckRole`` of ``infra/`` through GitHub's OIDC token, and this reads
the metadata database login and the PII salt from Secrets Manager with it. Each value is masked
in the job's log (``::add-mask::``) before it reaches ``$GITHUB_ENV``, where the next steps read
it; nothing is printed otherwise.

``PIPELINES_PG_SECRET_ID`` names a JSON secret ``{"username", "password"}`` (the stack's
``db-pipelines``); ``PIPELINES_PII_SALT_SECRET_ID`` a plain one (``pii-salt``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO


class CiSecretsError(RuntimeError):
    """A secret is missing or not in the expected shape."""


def _value(client: Any, secret_id: str) -> str:
    return str(client.get_secret_value(SecretId=secret_id)["SecretString"])


def ci_environment(client: Any, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the secrets named in ``environ`` give."""
    found: dict[str, str] = {}
    pg = environ.get("PIPELINES_PG_SECRET_ID", "").strip()
    if pg:
        try:
            login = json.loads(_value(client, pg))
            found["PIPELINES_PG_USER"], found["PIPELINES_PG_PASSWORD"] = login["username"], login["password"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CiSecretsError(f"secret {pg!r} is not a JSON login with username and password") from exc
    salt = environ.get("PIPELINES_PII_SALT_SECRET_ID", "").strip()
    if salt:
        found["PIPELINES_PII_SALT"] = _value(client, salt)
    if not found:
        raise CiSecretsError("set PIPELINES_PG_SECRET_ID and/or PIPELINES_PII_SALT_SECRET_ID")
    return found


def export(values: Mapping[str, str], github_env: Path, log: TextIO) -> None:
    """Mask each value in the job's log, then hand it to the next steps."""
    for name, value in values.items():
        if "\n" in value or "\r" in value:
            raise CiSecretsError(f"{name}: a value with a line break cannot go to GITHUB_ENV")
        print(f"::add-mask::{value}", file=log)
    with github_env.open("a") as out:
        out.writelines(f"{name}={value}\n" for name, value in values.items())
    print(f"exported {', '.join(values)}", file=log)


def main() -> int:
    import boto3

    github_env = os.environ.get("GITHUB_ENV", "").strip()
    if not github_env:
        print("ci_secrets: GITHUB_ENV is not set (this runs inside a CI job)", file=sys.stderr)
        return 2
    try:
        values = ci_environment(boto3.client("secretsmanager"), os.environ)
    except CiSecretsError as exc:
        print(f"ci_secrets: {exc}", file=sys.stderr)
        return 2
    export(values, Path(github_env), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
