"""Validation of every name that becomes a path segment or a SQL identifier."""

from __future__ import annotations

import re
from datetime import date

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PARTITION_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidIdentifierError(ValueError):
    """A name that would become SQL or a path is not safe to use."""


def safe_identifier(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL identifier (letters, digits, underscore)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidIdentifierError(f"invalid {what} {name!r}: use letters, digits and underscores")
    return name


def safe_partition_key(key: str) -> str:
    """Return ``key`` if it is a real ISO date, the only partition key shape we write."""
    if not isinstance(key, str) or not _PARTITION_KEY.fullmatch(key):
        raise InvalidIdentifierError(f"invalid partition key {key!r}: expected YYYY-MM-DD")
    try:
        date.fromisoformat(key)
    except ValueError as exc:
        raise InvalidIdentifierError(f"invalid partition key {key!r}: {exc}") from exc
    return key


def safe_file_name(name: str) -> str:
    """Return a landing file's base name if it cannot escape its folder."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 200
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
        or any(ord(c) < 32 for c in name)
    ):
        raise InvalidIdentifierError(f"unsafe file name {name!r}")
    return name


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal, for statements that take no parameters (views)."""
    if "\x00" in value:
        raise InvalidIdentifierError("a SQL string cannot hold a NUL character")
    return "'" + value.replace("'", "''") + "'"
