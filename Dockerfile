# syntax=docker/dockerfile:1
# One image for the whole production deployment (helm-values.yaml): the code location's gRPC
# server (the default CMD), the Dagster webserver and daemon, and every run pod the
# K8sRunLauncher starts. Build and push (docs/production.md, step 5):
#   docker build -t <ACCOUNT_ID>.dkr.ecr.<REGION>.amazonaws.com/pipelines:<IMAGE_TAG> .

# ---- build: resolve the locked dependencies into /app/.venv with uv ----------------------------
FROM python:3.11-slim AS build

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir "uv==0.13.9"

WORKDIR /app
# Dependencies first, so this layer is rebuilt only when the lock file changes.
# --frozen: install exactly uv.lock and fail if it is out of date with pyproject.toml.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
# The package, including the SQLMesh project (pipelines/shop/sqlmesh_project) and lifecycle rules.
COPY pipelines/ ./pipelines/
RUN uv sync --frozen --no-dev

# ---- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim

# The uid/gid the Helm values' securityContext expects (runAsUser 10001).
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /opt/dagster/dagster_home \
    && chown app:app /opt/dagster/dagster_home

# DAGSTER_EVENT_BATCH_SIZE: a ranged output's materializations in one INSERT (issue 27,
# docs/benchmarks.md; the same as DAGSTER_EVENT_ENV in pipelines/ops/cli.py).
ENV PATH=/app/.venv/bin:$PATH \
    HOME=/home/app \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DAGSTER_EVENT_BATCH_SIZE=1000

WORKDIR /app
# Owned by the app user: SQLMesh writes its cache next to the project, PIPELINES_DATA_DIR
# defaults to /app/.data.
COPY --from=build --chown=app:app /app /app

USER app
# DuckDB extensions from the pinned wheels into ~/.duckdb now, so pods never download them.
RUN python -c "from pipelines.platform.duckdb_extensions import install_extensions; install_extensions()"
# The code location's caches, built once here so no pod renders the SQLMesh project again: the
# bridge's project cache for the `prod` gateway the Helm values set
# (pipelines/shop/sqlmesh_project/.cache/dagster-bridge, keyed by the project files, the gateway and
# PIPELINES_ENV, so both are set as in the pods), SQLMesh's own model cache next to it, and the
# state of every SQLMeshProjectComponent in pipelines/defs (`dg utils refresh-defs-state`, into
# pipelines/defs/.local_defs_state). Reading the project needs a SQLMesh state, not its
# contents: a throwaway DuckDB file stands in for the PostgreSQL state during the build only, and
# a placeholder salt satisfies config.py's fail-closed check (no data is hashed here; the pods'
# secret salt applies at run time). load_configured_project keys the cache as the pods do.
# pipelines_tests/test_image_caches.py repeats this step and times a load from the result.
RUN export PIPELINES_ENV=prod SQLMESH_GATEWAY=prod \
    SQLMESH__GATEWAYS__PROD__STATE_CONNECTION__TYPE=duckdb \
    SQLMESH__GATEWAYS__PROD__STATE_CONNECTION__DATABASE=/tmp/build-state.duckdb \
    PIPELINES_PII_SALT=read-the-project-only \
    && python -c "from pipelines.platform.configured_project import load_configured_project; load_configured_project()" \
    && dg utils refresh-defs-state \
    && rm -f /tmp/build-state.duckdb*

EXPOSE 4000
CMD ["dagster", "api", "grpc", "--module-name", "pipelines.definitions", "--host", "0.0.0.0", "--port", "4000"]
