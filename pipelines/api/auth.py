"""Who may read which dataset: bearer tokens checked against SHA-256 hashes from a secret.

The secret (``PIPELINES_API_KEYS`` as JSON, or the file named by ``PIPELINES_API_KEYS_FILE``, e.g.
a mounted Kubernetes secret) maps ``sha256(token)`` in hex to the datasets that token may read
(a list of names, or ``"*"`` for every dataset). Only hashes are configured, so the secret itself
does not grant access if it leaks into a manifest. Tokens are compared with
``hmac.compare_digest`` over every configured hash, and never logged.

Locally (``PIPELINES_ENV=local``) with no keys configured, a development token is generated once
into ``<PIPELINES_DATA_DIR>/api_token`` (mode 0600) with access to every dataset; in prod no keys
means the API refuses to start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.platform.settings import Settings

ALL = "*"
TOKEN_FILE = "api_token"  # noqa: S105 - a file name, not a secret
_HEX64 = frozenset("0123456789abcdef")


class AuthConfigError(RuntimeError):
    """The API has no usable credentials configured."""


def token_hash(token: str) -> str:
    """The hex SHA-256 a key secret lists for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What one credential may read: every dataset, or the named ones."""

    datasets: frozenset[str] | None  # None = all

    def allows(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets


@dataclass(frozen=True)
class KeyRing:
    grants: tuple[tuple[bytes, Grant], ...]
    source: str  # where the keys came from, for the startup log (never the keys)

    def grant_for(self, token: str) -> Grant | None:
        """The grant of ``token``; every hash is compared so timing does not tell which matched."""
        digest = token_hash(token).encode("ascii")
        found = None
        for known, grant in self.grants:
            if hmac.compare_digest(digest, known):
                found = grant
        return found


def parse_keys(text: str, source: str) -> KeyRing:
    """A ``KeyRing`` from the JSON ``{"<sha256 hex>": "*" | ["dataset", ...]}``."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthConfigError(f"{source} is not valid JSON (line {exc.lineno})") from None
    if not isinstance(raw, dict) or not raw:
        raise AuthConfigError(f"{source} must be a non-empty JSON object of token hash -> datasets")
    grants = []
    for index, (digest, datasets) in enumerate(raw.items()):
        digest = str(digest).strip().lower()
        if len(digest) != 64 or not set(digest) <= _HEX64:
            # never echo the key: it might be a plaintext token pasted by mistake
            raise AuthConfigError(f"{source}: key #{index + 1} is not a hex SHA-256 of a token")
        if datasets == ALL:
            grant = Grant(None)
        elif isinstance(datasets, list) and all(isinstance(d, str) for d in datasets):
            grant = Grant(frozenset(datasets))
        else:
            raise AuthConfigError(f'{source}: key #{index + 1} must map to "*" or a list of dataset names')
        grants.append((digest.encode("ascii"), grant))
    return KeyRing(tuple(grants), source)


def local_dev_token(settings: Settings) -> str:
    """The local development token, created on first use (readable by its owner only)."""
    path = settings.data_dir / TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text(encoding="utf-8").strip()


def load_keys(settings: Settings, environ: Mapping[str, str] | None = None) -> KeyRing:
    """The configured keys; the local dev token when none are set locally; an error in prod."""
    env = os.environ if environ is None else environ
    inline = env.get("PIPELINES_API_KEYS", "").strip()
    file_name = env.get("PIPELINES_API_KEYS_FILE", "").strip()
    if inline and file_name:
        raise AuthConfigError("set PIPELINES_API_KEYS or PIPELINES_API_KEYS_FILE, not both")
    if inline:
        return parse_keys(inline, "PIPELINES_API_KEYS")
    if file_name:
        try:
            text = Path(file_name).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthConfigError(f"PIPELINES_API_KEYS_FILE={file_name}: {exc.strerror}") from None
        return parse_keys(text, f"PIPELINES_API_KEYS_FILE={file_name}")
    if settings.env == "prod":
        raise AuthConfigError(
            "no API keys configured: set PIPELINES_API_KEYS_FILE (a mounted secret) or "
            'PIPELINES_API_KEYS to a JSON object mapping sha256(token) hex -> "*" or a list of '
            "datasets; the API does not serve production data without credentials"
        )
    token = local_dev_token(settings)
    return KeyRing(
        ((token_hash(token).encode("ascii"), Grant(None)),),
        f"local development token in {settings.data_dir / TOKEN_FILE}",
    )
