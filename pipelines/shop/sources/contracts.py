"""Data contracts: the declared schema of every source, next to nothing else.

A contract is what ingestion validates against and what SQLMesh's external models declare;
``pipelines_tests`` checks that the two never drift apart. Classifications feed governance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dagster_sqlmesh_bridge.identifiers import safe_identifier

SourceKind = Literal["database", "files", "http"]
Classification = Literal["public", "internal", "confidential", "pii"]
SQL_TYPES = ("BIGINT", "INTEGER", "DOUBLE", "VARCHAR", "DATE", "TIMESTAMP", "BOOLEAN")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    classification: Classification = "internal"
    description: str = ""

    def __post_init__(self) -> None:
        safe_identifier(self.name, "column name")
        if self.type not in SQL_TYPES:
            raise ValueError(f"column {self.name}: unsupported type {self.type}")


@dataclass(frozen=True)
class SourceContract:
    name: str
    kind: SourceKind
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partition_column: str | None = None
    retention_days: int = 400
    quarantine_retention_days: int = 30
    owners: tuple[str, ...] = field(default=("team:data-platform",))

    def __post_init__(self) -> None:
        safe_identifier(self.name, "source name")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"source {self.name}: duplicate column names")
        missing = set(self.key) - set(names)
        if missing:
            raise ValueError(f"source {self.name}: key columns {sorted(missing)} not declared")
        if self.partition_column and self.partition_column not in names:
            raise ValueError(f"source {self.name}: partition column not declared")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _c(
    name: str, type_: str, nullable: bool = True, cls: Classification = "internal", doc: str = ""
) -> Column:
    return Column(name, type_, nullable, cls, doc)


CONTRACTS: dict[str, SourceContract] = {
    c.name: c
    for c in (
        SourceContract(
            name="customers",
            kind="database",
            description="Customer accounts from the shop database, a daily snapshot.",
            key=("customer_id",),
            columns=(
                _c("customer_id", "BIGINT", False, doc="Customer identifier"),
                _c("full_name", "VARCHAR", False, "pii", "Customer's name"),
                _c("email", "VARCHAR", False, "pii", "Customer's e-mail address"),
                _c("country", "VARCHAR", False, "internal", "ISO country code"),
                _c("segment", "VARCHAR", False, "internal", "consumer, business or vip"),
                _c("signup_date", "DATE", False, "internal", "Day the account was created"),
            ),
        ),
        SourceContract(
            name="products",
            kind="database",
            description="Product catalogue from the shop database, a daily snapshot.",
            key=("product_id",),
            columns=(
                _c("product_id", "BIGINT", False, doc="Product identifier"),
                _c("product_name", "VARCHAR", False, "public", "Display name"),
                _c("category", "VARCHAR", False, "public", "Product category"),
                _c("unit_price", "DOUBLE", False, "public", "List price in the product currency"),
            ),
        ),
        SourceContract(
            name="orders",
            kind="database",
            description="Orders placed in the shop, by order day.",
            key=("order_id",),
            partition_column="order_ts",
            columns=(
                _c("order_id", "BIGINT", False, doc="Order identifier"),
                _c("customer_id", "BIGINT", False, doc="Who ordered"),
                _c("order_ts", "TIMESTAMP", False, doc="When the order was placed (UTC)"),
                _c("status", "VARCHAR", False, doc="placed, shipped, cancelled or returned"),
                _c("currency", "VARCHAR", False, doc="ISO currency of the order"),
                _c("shipping_address", "VARCHAR", True, "pii", "Delivery address"),
            ),
        ),
        SourceContract(
            name="order_items",
            kind="database",
            description="Order lines, by order day.",
            key=("order_item_id",),
            partition_column="order_ts",
            columns=(
                _c("order_item_id", "BIGINT", False, doc="Order line identifier"),
                _c("order_id", "BIGINT", False, doc="Order of this line"),
                _c("product_id", "BIGINT", False, doc="Product sold"),
                _c("quantity", "INTEGER", False, doc="Units"),
                _c("unit_price", "DOUBLE", False, doc="Price per unit in the order currency"),
                _c("order_ts", "TIMESTAMP", False, doc="When the order was placed (UTC)"),
            ),
        ),
        SourceContract(
            name="web_events",
            kind="files",
            description="Clickstream events dropped as JSON lines files into the landing zone.",
            key=("event_id",),
            partition_column="event_ts",
            retention_days=90,
            columns=(
                _c("event_id", "VARCHAR", False, doc="Event identifier"),
                _c("event_ts", "TIMESTAMP", False, doc="When the event happened (UTC)"),
                _c("session_id", "VARCHAR", False, doc="Browser session"),
                _c("customer_id", "BIGINT", True, doc="Logged-in customer, if any"),
                _c("event_type", "VARCHAR", False, doc="page_view, add_to_cart or checkout"),
                _c("page", "VARCHAR", True, "public", "Page path"),
                _c("ip_address", "VARCHAR", True, "pii", "Client IP address"),
            ),
        ),
        SourceContract(
            name="fx_rates",
            kind="http",
            description="Daily exchange rates to USD from the rates HTTP API.",
            key=("rate_date", "currency"),
            partition_column="rate_date",
            columns=(
                _c("rate_date", "DATE", False, "public", "Day the rate applies to"),
                _c("currency", "VARCHAR", False, "public", "ISO currency"),
                _c("usd_rate", "DOUBLE", False, "public", "USD per unit of currency"),
            ),
        ),
    )
}
