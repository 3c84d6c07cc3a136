#!/usr/bin/env bash
# Helm post-renderer: adds the PgBouncer sidecar (helm-values.yaml, x-pgbouncer-sidecar) to the
# daemon and webserver Deployments, whose chart values have no containers of their own. The
# chart's dagster.yaml points every Dagster process at 127.0.0.1:6432, so every pod that loads
# it needs the sidecar (docs/production.md, "A pooler beside every process").
#
#   uv run pipelines fill-values --outputs cdk-outputs.json \
#     --values deploy/pgbouncer-sidecar/sidecar-patch.yaml --out /tmp/sidecar-patch.yaml
#   SIDECAR_PATCH=/tmp/sidecar-patch.yaml helm upgrade --install dagster dagster/dagster ... \
#     -f /tmp/values.prod.yaml --post-renderer deploy/pgbouncer-sidecar/post-render.sh
#
# Helm writes the rendered manifests to stdin and reads the result from stdout. Needs kubectl
# (its built-in kustomize).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
patch=${SIDECAR_PATCH:-$here/sidecar-patch.yaml}
if grep -q '<[A-Z_]*>' "$patch"; then
  echo "post-render: $patch still has <PLACEHOLDERS>: fill it (pipelines fill-values) and set SIDECAR_PATCH" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/kustomization.yaml" "$work/"
cp "$patch" "$work/sidecar-patch.yaml"
cat > "$work/all.yaml"
kubectl kustomize "$work"
