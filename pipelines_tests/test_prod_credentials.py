"""S3 credentials that expire mid-run: DuckDB re-resolves them instead of failing.

moto's S3 server with authentication on (``INITIAL_NO_AUTH_ACTION_COUNT``) accepts only access
keys its IAM knows. The fault: the key a connection started with is deleted while the
connection is open (what an expiring STS session looks like to S3: 403 on every request), and
the environment now holds the next key, as the SDK's providers would after a rotation.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import duckdb
import pytest

from pipelines.platform.duckdb_s3 import configure_s3, s3_secret_options

REGION = "us-east-1"
BUCKET = "rotating-credentials"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def authenticating_s3() -> Iterator[dict[str, Any]]:
    """A moto server of its own (auth is process-wide in moto) that checks access keys after
    its first 5 actions, with an IAM user holding two keys, A and B, and a bucket."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        anonymous = {"endpoint_url": url, "region_name": REGION}
        iam = boto3.client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="x", **anonymous)
        iam.create_user(UserName="pipelines")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="pipelines", PolicyName="all", PolicyDocument=json.dumps(policy))
        keys = [iam.create_access_key(UserName="pipelines")["AccessKey"] for _ in range(2)]

        def client(service: str, key: dict[str, str]) -> Any:
            return boto3.client(
                service,
                aws_access_key_id=key["AccessKeyId"],
                aws_secret_access_key=key["SecretAccessKey"],
                **anonymous,
            )

        client("s3", keys[0]).create_bucket(Bucket=BUCKET)
        yield {"url": url, "keys": keys, "client": client}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _use_key(monkeypatch: pytest.MonkeyPatch, url: str, key: dict[str, str]) -> None:
    for name in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])


def test_secret_names_a_refreshing_chain_never_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    options = s3_secret_options()
    assert options["provider"] == "credential_chain" and options["refresh"] == "auto"
    assert options["chain"] == "env"
    assert "AKIAEXAMPLE" not in json.dumps(options) and "secret-value" not in json.dumps(options)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert "chain" not in s3_secret_options()  # the SDK's default chain (IRSA's web identity)


def test_a_connection_survives_its_credentials_being_rotated(
    authenticating_s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, (key_a, key_b), client = (
        authenticating_s3["url"],
        authenticating_s3["keys"],
        authenticating_s3["client"],
    )
    _use_key(monkeypatch, url, key_a)
    path = f"s3://{BUCKET}/warehouse/t.parquet"
    con = duckdb.connect()  # the project's secret: credential_chain + REFRESH auto
    configure_s3(con)
    con.execute(f"COPY (SELECT range AS x FROM range(1000)) TO '{path}' (FORMAT parquet)")
    assert con.execute(f"SELECT sum(x) FROM '{path}'").fetchone() == (499500,)

    frozen = duckdb.connect()  # what the secret used to hold: the keys of the moment, copied
    configure_s3(frozen)
    frozen.execute(
        "CREATE OR REPLACE TEMPORARY SECRET pipelines_s3 (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, "
        "ENDPOINT ?, URL_STYLE 'path', USE_SSL false)".replace("?", "'{}'").format(
            key_a["AccessKeyId"], key_a["SecretAccessKey"], REGION, url.removeprefix("http://")
        )
    )
    assert frozen.execute(f"SELECT count(*) FROM '{path}'").fetchone() == (1000,)

    # rotation: key A stops working (as an expired session does), the environment has key B
    client("iam", key_b).delete_access_key(UserName="pipelines", AccessKeyId=key_a["AccessKeyId"])
    _use_key(monkeypatch, url, key_b)

    with pytest.raises(duckdb.Error, match="403|Forbidden|InvalidAccessKeyId"):
        frozen.execute(f"SELECT count(*) FROM '{path}'").fetchone()
    # the same open connection: refused once, refreshed from the chain, retried
    assert con.execute(f"SELECT sum(x) FROM '{path}'").fetchone() == (499500,)
    con.execute(f"COPY (SELECT 1 AS y) TO 's3://{BUCKET}/warehouse/u.parquet' (FORMAT parquet)")
    assert con.execute(f"SELECT y FROM 's3://{BUCKET}/warehouse/u.parquet'").fetchone() == (1,)
