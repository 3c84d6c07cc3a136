"""The AWS CDK app of the platform (``cd infra && npx cdk synth``); see ``app.py``."""
