"""DuckDB's view of S3: one secret built from the standard AWS environment variables.

With no static keys in the environment (an EKS pod with an IAM role), the ``credential_chain``
provider of the aws extension picks up the role. Values are passed as parameters and never logged.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import duckdb

from pipelines.duckdb_extensions import install_extensions


def s3_secret_options(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The ``CREATE SECRET`` options for S3 (also used for SQLMesh's gateway secrets)."""
    env = os.environ if environ is None else environ
    options: dict[str, str] = {"type": "s3"}
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        options["key_id"] = env["AWS_ACCESS_KEY_ID"]
        options["secret"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            options["session_token"] = env["AWS_SESSION_TOKEN"]
    else:
        frozen = _role_credentials()
        if frozen is not None:  # IRSA / instance role, resolved by boto3 at connection time
            options["key_id"], options["secret"] = frozen.access_key, frozen.secret_key
            if frozen.token:
                options["session_token"] = frozen.token
        else:
            options["provider"] = "credential_chain"
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        options["endpoint"] = parsed.netloc or parsed.path
        options["url_style"] = "path"
        options["use_ssl"] = "true" if parsed.scheme == "https" else "false"
    return options


def _role_credentials() -> object | None:
    """Temporary credentials of the pod's IAM role (IRSA) via boto3's provider chain.

    DuckDB's own credential_chain has been seen to ignore web-identity tokens, so boto3
    resolves them and DuckDB gets short-lived keys for this connection only.
    """
    import boto3

    credentials = boto3.Session().get_credentials()
    return credentials.get_frozen_credentials() if credentials is not None else None


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
    if value in ("true", "false"):
        return value
    return "'" + value.replace("'", "''") + "'"
