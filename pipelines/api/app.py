"""A read-only HTTP API over the marts schema: dataset list, schemas and paged, filtered rows.

Names in a URL are only ever matched against DuckDB's own catalog of the ``marts`` schema, so a
request can name nothing else; values travel as bound parameters. Only tables a model of the
project defines are served, and of those only classified columns: columns classified ``pii`` (or
not classified at all) are never listed, returned, filtered or sorted on, and a table no model
defines is refused (403) and never listed. Each request opens its own read-only connection.
Every ``/datasets`` endpoint needs a bearer token (``pipelines.api.auth``) and serves only the
datasets that token is granted; ``/health``, ``/ready`` and the OpenAPI document are open, and
``/ready`` says more than its status only to a valid token.
"""

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from dagster_sqlmesh_bridge.identifiers import safe_identifier
from dagster_sqlmesh_bridge.project import quoted_table
from pipelines.api.auth import Grant, KeyRing, load_keys
from pipelines.api.classification import SCHEMA, TableLevels, classify, marts_levels, table_levels
from pipelines.api.connection import CatalogConnections, catalog_login
from pipelines.platform.settings import Settings

# ---------------------------------------------------------------------------------------------
# The catalog: what may be served
# ---------------------------------------------------------------------------------------------

# A plain scalar type we can bind a filter value to (no STRUCT/LIST/MAP).
_SCALAR_TYPE = re.compile(r"^[A-Z][A-Z0-9_ ]*(\(\d+(,\s*\d+)?\))?$")


@dataclass(frozen=True)
class ColumnMeta:
    name: str
    type: str
    description: str | None
    classification: str

    @property
    def filterable(self) -> bool:
        return bool(_SCALAR_TYPE.match(self.type))


@dataclass(frozen=True)
class DatasetMeta:
    name: str
    description: str | None
    columns: tuple[ColumnMeta, ...]
    catalog: str | None = None  # the connection's catalog, which holds the marts schema

    def column(self, name: str) -> ColumnMeta | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def relation(self) -> str:
        """The relation, fully qualified and quoted per part (``marts.x`` alone is ambiguous when
        a catalog is named ``marts``); only ever built from names the catalog returned."""
        return quoted_table(self.catalog, SCHEMA, safe_identifier(self.name, "dataset name"))


def _clean(text: str | None) -> str | None:
    return text.strip() or None if text else None


@functools.lru_cache(maxsize=4)
def model_descriptions(project_dir: str) -> dict[str, tuple[str | None, dict[str, str]]]:
    """``table -> (description, column descriptions)`` for the marts models, parsed once.

    Only used when the warehouse carries no comments (some catalogs drop them).
    """
    from sqlglot import exp
    from sqlmesh.core.dialect import parse

    found: dict[str, tuple[str | None, dict[str, str]]] = {}
    for path in sorted(Path(project_dir, "models").rglob("*.sql")):
        try:
            model = parse(path.read_text(encoding="utf-8"), default_dialect="duckdb")[0]
        except Exception:  # noqa: BLE001, S112 - one unparsable file must not hide the others
            continue
        props = {p.name: p.args.get("value") for p in model.expressions}
        name = props.get("name")
        if not isinstance(name, exp.Table) or name.db != SCHEMA:
            continue
        description = props.get("description")
        columns: dict[str, str] = {}
        described = props.get("column_descriptions")
        if isinstance(described, exp.Tuple):
            for pair in described.expressions:
                if isinstance(pair, exp.EQ) and isinstance(pair.expression, exp.Literal):
                    columns[pair.this.name] = pair.expression.this
        text = description.this if isinstance(description, exp.Literal) else None
        found[name.name] = (text, columns)
    return found


def _relations(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str | None]]:
    """(name, comment) of every table and view of the marts schema, by name."""
    return con.execute(
        "SELECT table_name, comment FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = ? "
        "UNION ALL SELECT view_name, comment FROM duckdb_views() "
        "WHERE database_name = current_database() AND schema_name = ? AND NOT internal "
        "ORDER BY 1",
        [SCHEMA, SCHEMA],
    ).fetchall()


def list_datasets(
    con: duckdb.DuckDBPyConnection, levels: TableLevels, project_dir: str | None = None
) -> list[DatasetMeta]:
    """Every table and view of the marts schema that a model of the project defines, with its
    servable (classified, non-PII) columns, as ``levels`` (``marts_levels``) classify them.
    Tables nothing classifies are left out: the listing does not advertise them."""
    (catalog,) = con.execute("SELECT current_database()").fetchone()  # type: ignore[misc]
    relations = [(t, c) for t, c in _relations(con) if table_levels(t, levels) is not None]
    columns = con.execute(
        "SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = ? "
        "ORDER BY table_name, column_index",
        [SCHEMA],
    ).fetchall()
    by_table: dict[str, list[tuple[str, str, str | None]]] = {}
    for table, column, data_type, comment in columns:
        by_table.setdefault(table, []).append((column, data_type, _clean(comment)))
    datasets = []
    for table, comment in relations:
        try:
            safe_identifier(table, "dataset name")
        except ValueError:
            continue  # a name we could not quote safely is simply not served
        cols = by_table.get(table, [])
        description = _clean(comment)
        if project_dir and (description is None or any(c[2] is None for c in cols)):
            model_doc, col_docs = model_descriptions(project_dir).get(table, (None, {}))
            description = description or model_doc
            cols = [(n, t, d or col_docs.get(n)) for n, t, d in cols]
        known = table_levels(table, levels) or {}
        classified = [(name, data_type, doc, classify(name, known)) for name, data_type, doc in cols]
        metas = tuple(
            ColumnMeta(name, data_type, doc, level)
            for name, data_type, doc, level in classified
            if level != "pii" and _is_identifier(name)
        )
        datasets.append(DatasetMeta(table, description, metas, catalog))
    return datasets


def _is_identifier(name: str) -> bool:
    try:
        safe_identifier(name, "column name")
    except ValueError:
        return False
    return True


def find_dataset(
    con: duckdb.DuckDBPyConnection, name: str, levels: TableLevels, project_dir: str | None = None
) -> DatasetMeta | None:
    return next((d for d in list_datasets(con, levels, project_dir) if d.name == name), None)


def refusal(con: duckdb.DuckDBPyConnection, name: str, levels: TableLevels) -> str | None:
    """Why the marts table ``name`` exists but is not served (no model defines it, so nothing
    classifies its columns), or None. Names the table, never its data."""
    if table_levels(name, levels) is not None or name not in {t for t, _ in _relations(con)}:
        return None
    return (
        f"dataset {name!r} is not served: no model of the SQLMesh project defines {SCHEMA}.{name}, "
        "so its columns have no classification"
    )


# ---------------------------------------------------------------------------------------------
# Response models (they are the OpenAPI document)
# ---------------------------------------------------------------------------------------------

Classification = Literal["public", "internal", "confidential", "pii-masked"]
ORDER_BY = r"^-?[A-Za-z_][A-Za-z0-9_]*(,-?[A-Za-z_][A-Za-z0-9_]*)*$"
RESERVED_PARAMS = {"limit", "offset", "order_by"}
MAX_OFFSET = 1_000_000_000
# DuckDB rounds '1.5' to 2 when casting to an integer: such filters must fail, not match 2.
INTEGER_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
}  # fmt: skip
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. ['query', 'limit']")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong, for a person")
    errors: list[ErrorItem] | None = Field(default=None, description="Per-parameter problems")


class ColumnInfo(BaseModel):
    name: str
    type: str = Field(description="DuckDB type")
    description: str | None
    classification: Classification
    filterable: bool = Field(description="Whether `?<column>=<value>` filters on it")


class DatasetSummary(BaseModel):
    name: str
    description: str | None
    row_count: int
    column_count: int


class DatasetList(BaseModel):
    datasets: list[DatasetSummary]


class DatasetSchema(BaseModel):
    name: str
    description: str | None
    row_count: int
    columns: list[ColumnInfo]


class RowsPage(BaseModel):
    dataset: str
    columns: list[str]
    rows: list[dict[str, Any]]
    limit: int
    offset: int
    total: int = Field(description="Rows matching the filters, over all pages")
    next_offset: int | None = Field(description="Offset of the next page, null on the last one")


class Health(BaseModel):
    status: Literal["ok"]
    env: str


class Ready(BaseModel):
    status: Literal["ready"]
    env: str | None = Field(default=None, description="Only to a valid token")
    datasets: int | None = Field(
        default=None, description="Marts datasets this token may read; only to a valid token"
    )


ERRORS_404: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown dataset or column"},
}
ERRORS_422: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid parameter value"},
}
ERRORS_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or unknown bearer token"},
    403: {
        "model": ErrorResponse,
        "description": "The token may not read this dataset, or no model of the project classifies it",
    },
}
ERRORS_503: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Warehouse unavailable"},
}


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    """Plain JSON for every DuckDB value: ISO dates, floats for decimals, null for NaN."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Decimal):
        return _json_value(float(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def _quote(name: str) -> str:
    return f'"{safe_identifier(name, "column name")}"'


def row_count(con: duckdb.DuckDBPyConnection, dataset: DatasetMeta) -> int:
    (count,) = con.execute(f"SELECT count(*) FROM {dataset.relation}").fetchone()  # type: ignore[misc]
    return int(count)


def _filters(
    con: duckdb.DuckDBPyConnection, dataset: DatasetMeta, items: list[tuple[str, str]]
) -> tuple[str, list[Any]]:
    """``WHERE`` clause and parameters for ``column=value`` pairs; repeated columns mean IN."""
    values: dict[str, list[str]] = {}
    for name, value in items:
        if name in RESERVED_PARAMS:
            continue
        column = dataset.column(name)
        if column is None:
            raise HTTPException(404, f"dataset {dataset.name!r} has no column {name!r}")
        if not column.filterable:
            raise HTTPException(422, f"column {name!r} of type {column.type} cannot be filtered")
        if len(value) > 1000:
            raise HTTPException(422, f"filter value for {name!r} is too long")
        if column.type in INTEGER_TYPES and not _INTEGER.match(value):
            raise HTTPException(422, f"{value!r} is not a whole number for column {name!r}")
        (invalid,) = con.execute(f"SELECT TRY_CAST(? AS {column.type}) IS NULL", [value]).fetchone()  # type: ignore[misc]
        if invalid:
            raise HTTPException(422, f"{value!r} is not a valid {column.type} for column {name!r}")
        values.setdefault(name, []).append(value)
    clauses, params = [], []
    for name, given in values.items():
        column_type = dataset.column(name).type  # type: ignore[union-attr]
        marks = ", ".join(f"CAST(? AS {column_type})" for _ in given)
        clauses.append(f"{_quote(name)} IN ({marks})")
        params.extend(given)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _order(dataset: DatasetMeta, order_by: str | None) -> str:
    """``ORDER BY`` the requested columns, then every other column, so pages never overlap."""
    terms, used = [], set()
    for raw in (order_by or "").split(","):
        if not raw:
            continue
        name, desc = (raw[1:], True) if raw.startswith("-") else (raw, False)
        if dataset.column(name) is None:
            raise HTTPException(404, f"dataset {dataset.name!r} has no column {name!r}")
        if name not in used:
            terms.append(f"{_quote(name)} {'DESC' if desc else 'ASC'} NULLS LAST")
            used.add(name)
    terms += [f"{_quote(c.name)} ASC NULLS LAST" for c in dataset.columns if c.name not in used]
    return " ORDER BY " + ", ".join(terms) if terms else ""


# ---------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------


def _error(status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body = ErrorResponse(detail=detail, errors=errors and [ErrorItem(**e) for e in errors])
    return JSONResponse(jsonable_encoder(body, exclude_none=True), status_code=status)


def create_app(settings: Settings | None = None, keys: KeyRing | None = None) -> FastAPI:
    """The API over ``settings``' warehouse (read from the environment when not given).

    ``keys`` default to ``load_keys``: raises ``AuthConfigError`` in prod when none are set.
    """
    settings = settings or Settings.from_env()
    keys = keys or load_keys(settings)
    if settings.env == "prod":
        catalog_login()  # fail at startup, not on the first request, without the read-only role
    project_dir = str(settings.sqlmesh_project_dir)
    levels = marts_levels(settings)  # the UI's classification (from the baked cache in the image)
    app = FastAPI(
        title="Shop marts API",
        version="1.0.0",
        description=(
            "Read-only access to the curated `marts` datasets of the shop warehouse. "
            "Columns classified `pii` are never served; `pii-masked` columns hold salted hashes. "
            "Tables no model of the project defines have no classification and are not served."
        ),
    )
    app.state.settings = settings
    app.state.key_source = keys.source
    bearer = HTTPBearer(
        auto_error=False,
        scheme_name="bearerToken",
        description="An API token; ask the data platform team for one (only its hash is configured).",
    )

    def grant(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Grant:
        found = keys.grant_for(credentials.credentials) if credentials else None
        if found is None:
            raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
        return found

    Access = Annotated[Grant, Depends(grant)]

    def allowed(access: Grant, name: str) -> None:
        if not access.allows(name):
            raise HTTPException(403, f"this token may not read dataset {name!r}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in exc.errors()
        ]
        return _error(422, "invalid request parameters", errors)

    connections = CatalogConnections(settings)

    def warehouse_connection() -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            con = connections.get()
        except (duckdb.Error, OSError) as exc:
            connections.discard()
            raise HTTPException(503, f"warehouse unavailable: {type(exc).__name__}") from exc
        try:
            yield con
        except duckdb.Error:
            connections.discard()  # a broken catalog login or S3 credential: attach anew
            raise
        finally:
            con.close()

    Connection = Annotated[duckdb.DuckDBPyConnection, Depends(warehouse_connection)]
    DatasetName = Annotated[str, PathParam(description="A dataset of the marts schema")]

    def dataset_or_404(con: duckdb.DuckDBPyConnection, name: str) -> DatasetMeta:
        dataset = find_dataset(con, name, levels, project_dir)
        if dataset is None:
            reason = refusal(con, name, levels)
            if reason is not None:
                raise HTTPException(403, reason)
            raise HTTPException(404, f"unknown dataset {name!r}")
        return dataset

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness: the process answers (the warehouse is not touched, so an outage of the
        catalog does not restart every replica)."""
        return Health(status="ok", env=settings.env)

    @app.get(
        "/ready",
        response_model=Ready,
        response_model_exclude_none=True,
        responses=ERRORS_503,
        tags=["service"],
        openapi_extra={"security": [{}, {"bearerToken": []}]},  # a token is optional here
    )
    def ready(request: Request, con: Connection) -> Ready:
        """Readiness: the warehouse catalog answers (503 otherwise). Only the status, unless a
        valid token asks: then also the environment and how many datasets it may read."""
        served = list_datasets(con, levels)
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        found = keys.grant_for(token) if scheme.lower() == "bearer" and token else None
        if found is None:  # a probe, or anyone: nothing about the data
            return Ready(status="ready")
        return Ready(status="ready", env=settings.env, datasets=sum(found.allows(d.name) for d in served))

    @app.get(
        "/datasets", response_model=DatasetList, responses={**ERRORS_AUTH, **ERRORS_503}, tags=["datasets"]
    )
    def datasets(access: Access, con: Connection) -> DatasetList:
        """Every marts dataset this token may read, with its description and row count."""
        return DatasetList(
            datasets=[
                DatasetSummary(
                    name=d.name,
                    description=d.description,
                    row_count=row_count(con, d),
                    column_count=len(d.columns),
                )
                for d in list_datasets(con, levels, project_dir)
                if access.allows(d.name)
            ]
        )

    @app.get(
        "/datasets/{name}",
        response_model=DatasetSchema,
        responses={**ERRORS_AUTH, **ERRORS_404, **ERRORS_422, **ERRORS_503},
        tags=["datasets"],
    )
    def dataset_schema(name: DatasetName, access: Access, con: Connection) -> DatasetSchema:
        """A dataset's columns with their types, descriptions and classifications."""
        allowed(access, name)
        dataset = dataset_or_404(con, name)
        return DatasetSchema(
            name=dataset.name,
            description=dataset.description,
            row_count=row_count(con, dataset),
            columns=[
                ColumnInfo(
                    name=c.name,
                    type=c.type,
                    description=c.description,
                    classification=c.classification,  # type: ignore[arg-type]
                    filterable=c.filterable,
                )
                for c in dataset.columns
            ],
        )

    @app.get(
        "/datasets/{name}/rows",
        response_model=RowsPage,
        responses={**ERRORS_AUTH, **ERRORS_404, **ERRORS_422, **ERRORS_503},
        tags=["datasets"],
    )
    def dataset_rows(
        request: Request,
        name: DatasetName,
        access: Access,
        con: Connection,
        limit: Annotated[int, Query(ge=1, le=1000, description="Rows per page")] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip")] = 0,
        order_by: Annotated[
            str | None,
            Query(
                max_length=1000,
                pattern=ORDER_BY,
                description="Comma-separated columns; prefix one with `-` for descending",
            ),
        ] = None,
    ) -> RowsPage:
        """One page of rows. Any other query parameter `<column>=<value>` keeps only rows whose
        column equals the value (repeat a column to accept several values); unknown columns
        are a 404, values that do not fit the column's type a 422."""
        allowed(access, name)
        dataset = dataset_or_404(con, name)
        where, params = _filters(con, dataset, list(request.query_params.multi_items()))
        order = _order(dataset, order_by)
        columns = [c.name for c in dataset.columns]
        select = ", ".join(_quote(c) for c in columns) or "NULL"
        (total,) = con.execute(f"SELECT count(*) FROM {dataset.relation}{where}", params).fetchone()  # type: ignore[misc]
        rows = con.execute(
            f"SELECT {select} FROM {dataset.relation}{where}{order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        return RowsPage(
            dataset=dataset.name,
            columns=columns,
            rows=[dict(zip(columns, map(_json_value, row), strict=True)) for row in rows],
            limit=limit,
            offset=offset,
            total=int(total),
            next_offset=offset + limit if offset + limit < total else None,
        )

    return app
