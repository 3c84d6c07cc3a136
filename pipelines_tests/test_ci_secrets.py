"""The CI job's secrets come from Secrets Manager (the S3 test server also serves it), masked."""

from __future__ import annotations

import io
from pathlib import Path

import boto3
import pytest

from pipelines.ops.ci_secrets import CiSecretsError, ci_environment, export
from pipelines_tests.services import S3Env


def test_the_login_and_salt_are_read_masked_and_exported(s3_env: S3Env, tmp_path: Path) -> None:
    client = boto3.client("secretsmanager", endpoint_url=s3_env.endpoint_url, region_name=s3_env.region)
    client.create_secret(
        Name="pipelines/prod/db-pipelines", SecretString='{"username": "pl", "password": "pw-9"}'
    )
    client.create_secret(Name="pipelines/prod/pii-salt", SecretString="salt-7")
    client.create_secret(Name="pipelines/prod/not-json", SecretString="plain")
    environ = {
        "PIPELINES_PG_SECRET_ID": "pipelines/prod/db-pipelines",
        "PIPELINES_PII_SALT_SECRET_ID": "pipelines/prod/pii-salt",
    }
    values = ci_environment(client, environ)
    assert values == {
        "PIPELINES_PG_USER": "pl",
        "PIPELINES_PG_PASSWORD": "pw-9",
        "PIPELINES_PII_SALT": "salt-7",
    }
    github_env, log = tmp_path / "github_env", io.StringIO()
    export(values, github_env, log)
    assert github_env.read_text().splitlines() == [
        "PIPELINES_PG_USER=pl",
        "PIPELINES_PG_PASSWORD=pw-9",
        "PIPELINES_PII_SALT=salt-7",
    ]
    shown = log.getvalue().splitlines()
    assert shown[:3] == ["::add-mask::pl", "::add-mask::pw-9", "::add-mask::salt-7"]  # masked before use
    assert "pw-9" not in "\n".join(shown[3:])
    with pytest.raises(CiSecretsError, match="not a JSON login"):
        ci_environment(client, {"PIPELINES_PG_SECRET_ID": "pipelines/prod/not-json"})
    with pytest.raises(CiSecretsError, match="set PIPELINES_PG_SECRET_ID"):
        ci_environment(client, {})
    with pytest.raises(CiSecretsError, match="line break"):
        export({"X": "a\nb"}, github_env, log)
