"""DuckDB's view of S3: one secret built from the standard AWS environment variables.

The secret names where credentials come from (``credential_chain``), never the credentials
themselves, and refreshes them when S3 refuses a request. Values are never logged.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import duckdb

from pipelines.platform.duckdb_extensions import install_extensions


def s3_secret_options(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The ``CREATE SECRET`` options for S3 (also used for SQLMesh's gateway secrets).

    Credentials are never copied into the secret: DuckDB's ``credential_chain`` resolves them
    and, with ``REFRESH auto``, resolves them again when S3 refuses a request, so a run longer
    than an STS session (IRSA: one hour) picks up the rotated credentials instead of failing.
    With keys in the environment the chain is ``env`` (read again at each refresh); without,
    the AWS SDK's default chain (web identity token of IRSA, profile, instance role).
    """
    env = os.environ if environ is None else environ
    options: dict[str, str] = {"type": "s3", "provider": "credential_chain", "refresh": "auto"}
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        options["chain"] = "env"
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        options["endpoint"] = parsed.netloc or parsed.path
        options["url_style"] = "path"
        options["use_ssl"] = "true" if parsed.scheme == "https" else "false"
    return options


def configure_s3(con: duckdb.DuckDBPyConnection) -> None:
    """Load httpfs and register the S3 secret on ``con``."""
    install_extensions()
    con.execute("LOAD httpfs")
    options = s3_secret_options()
    if options.get("provider") == "credential_chain":
        con.execute("LOAD aws")
    # CREATE SECRET takes no prepared parameters: values are quoted literals instead.
    literal = ", ".join(f"{k.upper()} {_quote(v)}" for k, v in options.items() if k != "type")
    con.execute(f"CREATE OR REPLACE TEMPORARY SECRET pipelines_s3 (TYPE s3, {literal})")


def _quote(value: str) -> str:
    if value in ("true", "false", "auto"):
        return value
    return "'" + value.replace("'", "''") + "'"
