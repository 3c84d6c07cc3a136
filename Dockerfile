# syntax=docker/dockerfile:1
# One image for the whole production deployment (helm-values.yaml): the code location's gRPC
# server (the default CMD), the Dagster webserver and daemon, and every run pod the
# K8sRunLauncher starts. Build and push (docs/production.md, step 4):
#   docker build --build-arg PIPELINES_GIT_COMMIT=<sha> -t <ACCOUNT_ID>.dkr.ecr.<REGION>.amazonaws.com/pipelines:<IMAGE_TAG> .
# Here, with podman from Debian's and PyPI's packages only: deploy/build-image.sh.
#
# BASE_IMAGE: the official Python image in production. deploy/build-image.sh points it at a
# Debian bookworm made by debootstrap (localhost/debian-min:bookworm), which has no Python: the
# first RUN of each stage then installs Debian's python3 (3.11 in bookworm, the same minor as
# the default). Both stages must use the same base: the virtualenv links to its interpreter.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# An optional build secret `ca`: a CA bundle for reaching the package indexes through a TLS-
# inspecting proxy (deploy/build-image.sh passes the host's). Mounted only into the RUNs that
# download, at /run/secrets/ca, never copied into a layer; without it the defaults apply.

# ---- build: resolve the locked dependencies into /app/.venv with uv ----------------------------
FROM ${BASE_IMAGE} AS build

RUN --mount=type=secret,id=ca \
    if ! command -v python3 >/dev/null; then \
      ca=""; if [ -s /run/secrets/ca ]; then ca="-o Acquire::https::CAInfo=/run/secrets/ca"; fi \
      && apt-get $ca update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get $ca install -y -qq --no-install-recommends python3 python3-venv \
      && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
# uv in a virtualenv of its own (Debian's python3 has no pip, and refuses system-wide installs),
# not on PATH, so uv finds the base's python3 for /app/.venv.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==0.13.9"

WORKDIR /app
# --frozen: install exactly uv.lock and fail if it is out of date with pyproject.toml. The project
# itself is installed editable: a .pth naming /app and its entry points, none of which depends on
# the code, so a placeholder package installs the same files and this layer (the image's largest)
# changes only with pyproject.toml, uv.lock or README.md, not with every commit. The runtime stage
# copies the code next to it.
# The integration package (a uv workspace member) is installed the same way: its pyproject.toml
# here, its code (small) in the next layer.
COPY pyproject.toml uv.lock README.md ./
COPY packages/dagster-sqlmesh-bridge/pyproject.toml packages/dagster-sqlmesh-bridge/README.md \
     ./packages/dagster-sqlmesh-bridge/
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi \
    && /opt/uv/bin/uv sync --frozen --no-dev --no-install-workspace
COPY packages/ ./packages/
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi \
    && mkdir pipelines && touch pipelines/__init__.py \
    && /opt/uv/bin/uv sync --frozen --no-dev \
    && rm -r pipelines

# ---- runtime -----------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

# The local base: Debian's python3 at the path the build stage's virtualenv links to, and what
# the official image also carries (CA certificates for S3 and HTTPS, netbase, tzdata).
RUN --mount=type=secret,id=ca \
    if ! command -v python3 >/dev/null; then \
      ca=""; if [ -s /run/secrets/ca ]; then ca="-o Acquire::https::CAInfo=/run/secrets/ca"; fi \
      && apt-get $ca update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get $ca install -y -qq --no-install-recommends \
         python3 ca-certificates netbase tzdata \
      && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi

# The uid/gid the Helm values' securityContext expects (runAsUser 10001). /app is the app user's:
# SQLMesh writes its cache next to the project, PIPELINES_DATA_DIR defaults to /app/.data.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /opt/dagster/dagster_home /app/pipelines/platform \
    && chown app:app /opt/dagster/dagster_home \
    && chown -R app:app /app

# DAGSTER_EVENT_BATCH_SIZE: a ranged output's materializations in one INSERT (issue 27,
# docs/benchmarks.md; the same as DAGSTER_EVENT_ENV in pipelines/ops/cli.py).
ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    HOME=/home/app \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DAGSTER_EVENT_BATCH_SIZE=1000

WORKDIR /app
COPY --from=build --chown=app:app /app/.venv /app/.venv

USER app
# DuckDB extensions from the pinned wheels into ~/.duckdb now, so pods never download them. Only
# the module that installs them is copied first, so this layer too is rebuilt with the lock or
# that module, not with every commit (the full copy below brings the same file).
COPY --chown=app:app pipelines/platform/duckdb_extensions.py ./pipelines/platform/
RUN python -c "from pipelines.platform.duckdb_extensions import install_extensions; install_extensions()"

# The integration package and the platform's, including the SQLMesh project (pipelines/shop/sqlmesh_project) and lifecycle rules.
COPY --chown=app:app pyproject.toml uv.lock README.md ./
COPY --chown=app:app packages/ ./packages/
COPY --chown=app:app pipelines/ ./pipelines/

# The commit recorded in each applied SQLMesh plan's release record (the image has no .git;
# pipelines/component/releases.py ignores anything but a hex commit, so check it here). The RUN
# also puts the value in the build cache's key: podman (buildah) reuses a cached ENV whose ARG
# changed. After the code, so only the small layers below are rebuilt per commit.
ARG PIPELINES_GIT_COMMIT=""
RUN [ -z "$PIPELINES_GIT_COMMIT" ] || echo "$PIPELINES_GIT_COMMIT" | grep -Eqx '[0-9a-f]{7,40}'
ENV PIPELINES_GIT_COMMIT=${PIPELINES_GIT_COMMIT}

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
