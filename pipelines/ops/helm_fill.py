"""``pipelines fill-values``: fill the ``<PLACEHOLDER>`` marks of helm-values.yaml (or a ``deploy/``
manifest) from the CDK stack's outputs, into a new file kept out of git.

    cd infra && npx aws-cdk@2 deploy --outputs-file ../cdk-outputs.json
    uv run pipelines fill-values --outputs cdk-outputs.json --image-tag "$(git rev-parse --short HEAD)" \\
        --set SHOP_DB_HOST=shop-replica.internal --set RATES_API_URL=https://rates.example.com/v1 \
        --out /tmp/values.prod.yaml

Every placeholder must be filled, or nothing is written. Values are checked to be plain tokens
(host names, ARNs, tags), so a stack output cannot inject YAML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM_VALUES = REPO_ROOT / "helm-values.yaml"
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:/@+-]{1,512}$")

# placeholder -> CfnOutput key of infra/stack.py's PipelinesStack
FROM_OUTPUTS = {
    "ACCOUNT_ID": "AccountId",
    "REGION": "Region",
    "LAKE_BUCKET": "LakeBucketName",
    "AURORA_ENDPOINT": "AuroraEndpoint",
    "RDS_PROXY_ENDPOINT": "RdsProxyEndpoint",
    "IRSA_ROLE_NAME": "DagsterRoleName",
    "IRSA_ROLE_ARN": "DagsterRoleArn",
    "BOOTSTRAP_ROLE_ARN": "BootstrapRoleArn",
    "VPC_CIDR": "VpcCidr",
}


class FillError(ValueError):
    """The outputs or the values cannot be filled safely."""


def stack_outputs(path: Path, stack: str | None = None) -> dict[str, str]:
    """The outputs of one stack from ``cdk deploy --outputs-file`` (``{stack: {key: value}}``)."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or not doc:
        raise FillError(f"{path}: expected cdk's outputs JSON ({{stack: {{key: value}}}})")
    stacks = {k: v for k, v in doc.items() if isinstance(v, dict)}
    if stack:
        if stack not in stacks:
            raise FillError(f"{path}: no stack {stack!r} (found {sorted(stacks)})")
        return {k: str(v) for k, v in stacks[stack].items()}
    if len(stacks) != 1:
        raise FillError(f"{path}: {len(stacks)} stacks, name one with --stack")
    return {k: str(v) for k, v in next(iter(stacks.values())).items()}


def fill(text: str, outputs: Mapping[str, str], extra: Mapping[str, str] | None = None) -> str:
    """``text`` with every ``<NAME>`` replaced; raises if one stays unfilled or a value is unsafe."""
    values = {name: outputs[key] for name, key in FROM_OUTPUTS.items() if key in outputs}
    values.update(extra or {})
    for name, value in values.items():
        if not _SAFE_VALUE.match(value):
            raise FillError(f"value for <{name}> is not a plain host name, ARN or tag: {value!r}")
    missing = sorted({m for m in PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise FillError(
            "no value for " + ", ".join(f"<{m}>" for m in missing) + " (stack outputs or --set NAME=VALUE)"
        )
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def fill_file(
    outputs_path: Path,
    out_path: Path,
    values_path: Path = HELM_VALUES,
    extra: Mapping[str, str] | None = None,
    stack: str | None = None,
) -> Path:
    if Path(out_path).resolve() == Path(values_path).resolve():
        raise FillError("--out must be a new file: the template in git keeps its placeholders")
    filled = fill(Path(values_path).read_text(), stack_outputs(outputs_path, stack), extra)
    Path(out_path).write_text(filled)
    return Path(out_path)


def parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not PLACEHOLDER.fullmatch(f"<{name}>"):
            raise FillError(f"--set takes NAME=VALUE with an upper-case NAME, got {item!r}")
        out[name] = value
    return out
