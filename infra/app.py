"""CDK entry point: ``cd infra && npx aws-cdk@2 synth`` (cdk.json runs this) or
``uv run python -m infra.app`` (offline, into infra/cdk.out).

Under the CDK CLI, context comes from ``cdk.json``, ``cdk.context.json`` (``python -m
infra.lookup``) and ``-c key=value``, and nothing else: a missing key fails the synth. Run
directly, the app uses ``cdk.context.json`` or, without one, ``example-context.json``.
cdk-nag's AwsSolutions checks run on every synth; a finding without a suppression (reason next
to the resource, in ``stack.py``) is an error annotation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.stack import DeploymentContext, PipelinesStack

STACK_NAME = "PipelinesStack"
INFRA_DIR = Path(__file__).resolve().parent


def cdk_json_context() -> dict:
    """cdk.json's context plus the deployment's: $PIPELINES_INFRA_CONTEXT, else cdk.context.json
    (written by ``python -m infra.lookup``), else example-context.json. The CDK CLI passes its own."""
    context = dict(json.loads((INFRA_DIR / "cdk.json").read_text())["context"])
    chosen = os.environ.get("PIPELINES_INFRA_CONTEXT", "").strip()
    path = Path(chosen) if chosen else INFRA_DIR / "cdk.context.json"
    if not path.exists():
        path = INFRA_DIR / "example-context.json"
    context.update(json.loads(path.read_text()))
    return context


def build_app(context: dict | None = None, outdir: str | None = None) -> tuple[cdk.App, PipelinesStack]:
    """The app with its single stack; ``context`` overrides cdk.json (tests pass their own)."""
    app = cdk.App(context=context, outdir=outdir)
    ctx = DeploymentContext.from_node(app.node)
    stack = PipelinesStack(
        app,
        STACK_NAME,
        ctx,
        # Account and region come from the CLI's credentials at deploy time, never from code.
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
        ),
        synthesizer=cdk.DefaultStackSynthesizer(generate_bootstrap_version_rule=False),
        description=f"pipelines data platform: {ctx.deployment} foundation (S3, Aurora, secrets, IAM)",
    )
    # DB proxy target groups take no tags (CloudFormation rejects them).
    untaggable = ["AWS::RDS::DBProxyTargetGroup"]
    cdk.Tags.of(stack).add("app", "pipelines", exclude_resource_types=untaggable)
    cdk.Tags.of(stack).add("deployment", ctx.deployment, exclude_resource_types=untaggable)
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, stack


def main() -> None:
    """Synthesize into $CDK_OUTDIR (set by the CLI) or infra/cdk.out."""
    outdir = os.environ.get("CDK_OUTDIR") or str(INFRA_DIR / "cdk.out")
    # The CLI passes its context (CDK_CONTEXT_JSON): never fill its gaps with example values.
    under_cli = "CDK_CONTEXT_JSON" in os.environ or "CONTEXT_OVERFLOW_LOCATION_ENV" in os.environ
    app, _ = build_app(None if under_cli else cdk_json_context(), outdir=outdir)
    app.synth()
    print(f"synthesized {STACK_NAME} into {outdir}")


if __name__ == "__main__":
    main()
