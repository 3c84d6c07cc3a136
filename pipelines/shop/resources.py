"""The shop's source systems as resources: its database, the rates API, the demo data."""

from __future__ import annotations

import os
from datetime import date

import dagster as dg
import duckdb

from pipelines.platform.lake import Lake
from pipelines.platform.postgres import pg_sslmode
from pipelines.platform.resources import build_resources as platform_resources
from pipelines.platform.settings import Settings
from pipelines.shop.sources import demo
from pipelines.shop.sources.readers import attach_shop_database, embedded_rates_api_url


class ShopDatabaseResource(dg.ConfigurableResource):
    """The shop's relational database: PostgreSQL in production, a SQLite file locally."""

    sqlite_path: str | None = None
    host: str | None = None
    port: str = "5432"
    database: str | None = None
    user: str | None = None
    password: str | None = None
    sslmode: str = "prefer"

    def attach_options(self) -> dict[str, object]:
        if self.host:
            return {
                "postgres": {
                    "host": self.host,
                    "port": self.port,
                    "database": self.database or "shop",
                    "user": self.user or "",
                    "password": self.password or "",
                    "sslmode": self.sslmode,
                }
            }
        return {"sqlite_path": self.sqlite_path}


class RatesApiResource(dg.ConfigurableResource):
    """The exchange-rates HTTP API; an empty URL serves the demo API on 127.0.0.1, locally only."""

    base_url: str = ""
    timeout_seconds: float = 10.0
    attempts: int = 4
    # None: only outside prod (PIPELINES_ENV), so a resource built without settings fails closed
    demo_fallback: bool | None = None

    def url(self) -> str:
        if self.base_url:
            return self.base_url
        allowed = self.demo_fallback
        if allowed is None:
            allowed = os.environ.get("PIPELINES_ENV", "local").strip() != "prod"
        if not allowed:  # prod: fake exchange rates must never land silently
            raise dg.Failure("PIPELINES_RATES_API_URL is not set, and the demo API is for local use only")
        return embedded_rates_api_url()


class DemoDataResource(dg.ConfigurableResource):
    """Plays the source systems for the demo: fills the shop database and landing zone."""

    enabled: bool = False
    scale: float = 1.0

    def prepare(self, source: str, kind: str, partition: str, lake: Lake, shop: ShopDatabaseResource) -> None:
        if not self.enabled:
            return
        day = date.fromisoformat(partition)
        if kind == "database":
            con = duckdb.connect()
            try:
                attach_shop_database(con, **shop.attach_options(), read_only=False)  # type: ignore[arg-type]
                demo.seed_shop_database(con, "shop", [day], self.scale)
            finally:
                con.close()
        elif kind == "files":
            prefix = f"landing/{source}/{partition}"
            present = {obj.key.rsplit("/", 1)[-1] for obj in lake.list(prefix)}
            if not set(demo.WEB_EVENT_FILES) <= present:  # every file, so a crash mid-drop heals
                import tempfile
                from pathlib import Path

                with tempfile.TemporaryDirectory() as tmp:
                    con = duckdb.connect()
                    try:
                        for path in demo.write_web_events(con, day, self.scale, Path(tmp)):
                            lake.put_file(path, f"{prefix}/{path.name}")
                    finally:
                        con.close()


def shop_resources(settings: Settings) -> dict[str, object]:
    demo_data = DemoDataResource(
        enabled=settings.demo_seed, scale=float(os.environ.get("PIPELINES_DEMO_SCALE", "1"))
    )
    rates = RatesApiResource(
        base_url=os.environ.get("PIPELINES_RATES_API_URL", "").strip(),
        demo_fallback=settings.env == "local",
    )
    if settings.env == "prod":
        shop = ShopDatabaseResource(
            host=dg.EnvVar("SHOP_DB_HOST"),
            port=os.environ.get("SHOP_DB_PORT", "5432"),
            database=dg.EnvVar("SHOP_DB_NAME"),
            user=dg.EnvVar("SHOP_DB_USER"),
            password=dg.EnvVar("SHOP_DB_PASSWORD"),
            sslmode=pg_sslmode(),
        )
    else:
        shop = ShopDatabaseResource(sqlite_path=str(settings.data_dir / "shop.sqlite"))
    return {"shop": shop, "rates_api": rates, "demo_data": demo_data}


def build_resources(settings: Settings) -> dict[str, object]:
    """Every resource the shop's code location uses: the platform's and the shop's."""
    return {**platform_resources(settings), **shop_resources(settings)}
