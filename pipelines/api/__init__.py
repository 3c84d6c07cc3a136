"""A read-only HTTP API over the marts schema."""

from pipelines.api.app import create_app

__all__ = ["create_app"]
