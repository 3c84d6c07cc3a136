"""The object store behind the lake: a local folder or an S3 prefix, one interface.

Writers always produce a complete file first and then publish it with one atomic step
(``os.replace`` locally, a single PUT on S3), so a reader sees the old or the new object,
never half of one.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

# name: (default, integer?). Attempts count the first try: 9 = 1 try + 8 retries.
S3_SETTINGS = {
    "PIPELINES_S3_CONNECT_TIMEOUT": (5.0, False),
    "PIPELINES_S3_READ_TIMEOUT": (30.0, False),
    "PIPELINES_S3_MAX_ATTEMPTS": (9, True),
}


@dataclass(frozen=True)
class LakeObject:
    key: str
    size: int
    last_modified: datetime
    storage_class: str = "STANDARD"  # S3's; GLACIER and DEEP_ARCHIVE objects must be restored to be read


def _s3_setting(environ: Mapping[str, str], name: str) -> float:
    default, integer = S3_SETTINGS[name]
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        kind = "a whole number >= 1" if integer else "a number of seconds > 0"
        raise ValueError(f"{name} must be {kind}, got {raw!r}")
    return value


def s3_config(environ: Mapping[str, str] | None = None) -> Config:
    """Timeouts and retry budget of the S3 client, from ``PIPELINES_S3_*`` (validated, so a typo
    fails the first S3 call with the variable's name instead of hanging or retrying forever)."""
    env = os.environ if environ is None else environ
    attempts = int(_s3_setting(env, "PIPELINES_S3_MAX_ATTEMPTS"))
    return Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=_s3_setting(env, "PIPELINES_S3_CONNECT_TIMEOUT"),
        read_timeout=_s3_setting(env, "PIPELINES_S3_READ_TIMEOUT"),
    )


def s3_client() -> Any:
    """A boto3 S3 client; endpoint and credentials come from the standard AWS_* variables."""
    return boto3.client("s3", config=s3_config())


def is_hidden(relative_key: str) -> bool:
    """In-flight temp files (``.x.tmp``) and markers (``_SUCCESS``, ``_temporary/``) are not data."""
    return any(part.startswith((".", "_")) for part in relative_key.split("/"))


class Lake:
    """Keys are ``/``-separated paths relative to the lake root (``raw/orders/ds=…/data.parquet``)."""

    def __init__(self, uri: str, client: Any | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.is_s3 = self.uri.startswith("s3://")
        if self.is_s3:
            bucket, _, prefix = self.uri[len("s3://") :].partition("/")
            self.bucket, self.prefix = bucket, prefix.strip("/")
            self._client = client
        else:
            self.root = Path(self.uri)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _s3_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        """Where DuckDB (or a person) finds ``key``."""
        return f"{self.uri}/{key}" if self.is_s3 else str(self.root / key)

    def put_file(self, local_path: Path, key: str) -> None:
        if self.is_s3:
            self.client.upload_file(str(local_path), self.bucket, self._s3_key(key))
            return
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, target)

    def put_bytes(self, data: bytes, key: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "object"
            path.write_bytes(data)
            self.put_file(path, key)

    def get_bytes(self, key: str) -> bytes:
        if self.is_s3:
            return self.client.get_object(Bucket=self.bucket, Key=self._s3_key(key))["Body"].read()
        return (self.root / key).read_bytes()

    def download(self, key: str, local_path: Path) -> None:
        if self.is_s3:
            self.client.download_file(self.bucket, self._s3_key(key), str(local_path))
        else:
            shutil.copyfile(self.root / key, local_path)

    def exists(self, key: str) -> bool:
        if self.is_s3:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._s3_key(key))
            except self.client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True
        return (self.root / key).is_file()

    def list(self, prefix: str, hidden: bool = False) -> Iterator[LakeObject]:
        """Every object under ``prefix``, in key order; below ``prefix``, names starting with
        ``.`` or ``_`` are skipped (unless ``hidden``) on S3 as locally."""
        prefix = prefix.strip("/")
        if self.is_s3:
            paginator = self.client.get_paginator("list_objects_v2")
            full = self._s3_key(prefix) + "/"
            strip = len(self.prefix) + 1 if self.prefix else 0
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    if hidden or not is_hidden(obj["Key"][len(full) :]):
                        yield LakeObject(
                            obj["Key"][strip:],
                            obj["Size"],
                            obj["LastModified"],
                            obj.get("StorageClass", "STANDARD"),
                        )
            return
        base = self.root / prefix
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and (hidden or not is_hidden(path.relative_to(base).as_posix())):
                stat = path.stat()
                yield LakeObject(
                    path.relative_to(self.root).as_posix(),
                    stat.st_size,
                    datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                )

    def delete(self, key: str) -> None:
        if self.is_s3:
            self.client.delete_object(Bucket=self.bucket, Key=self._s3_key(key))
        else:
            (self.root / key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        keys = [obj.key for obj in self.list(prefix, hidden=True)]
        for key in keys:
            self.delete(key)
        if not self.is_s3:
            shutil.rmtree(self.root / prefix.strip("/"), ignore_errors=True)
        return len(keys)
