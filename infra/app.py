"""CDK entry point: ``cd infra && npx aws-cdk@2 synth`` (cdk.json runs this) or
``uv run python -m infra.app`` (offline, into infra/cdk.out).

Context comes from ``cdk.json``'s ``context`` (example values), ``cdk.context.json`` or
``-c key=value``. cdk-nag's AwsSolutions checks run on every synth; a finding without a
suppression (reason next to the resource, in ``stack.py``) is an error annotation.
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
    """The example context in cdk.json (the CLI passes it itself; plain ``python -m`` needs this)."""
    return dict(json.loads((INFRA_DIR / "cdk.json").read_text())["context"])


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
    """Synthesize into $CDK_OUTDIR (set by the CLI) or infra/cdk.out, with cdk.json's context."""
    outdir = os.environ.get("CDK_OUTDIR") or str(INFRA_DIR / "cdk.out")
    app, _ = build_app(cdk_json_context(), outdir=outdir)
    app.synth()
    print(f"synthesized {STACK_NAME} into {outdir}")


if __name__ == "__main__":
    main()
