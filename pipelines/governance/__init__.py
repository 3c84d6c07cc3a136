"""Data governance: classification, PII lint, retention, impact analysis and the audit trail.

- :mod:`.classification` levels of every column (contracts, governance.yaml, lineage)
- :mod:`.pii_lint`       CI gate: no unmasked PII in the marts
- :mod:`.retention`      deletes expired raw/quarantine partitions
- :mod:`.impact`         downstream columns and reports of a source column
- :mod:`.audit_log`      one immutable JSON record per finished run in the lake

Submodules are imported on use: the lint and impact CLIs stay free of the Dagster run machinery.
"""

from pipelines.governance.classification import (
    LEVELS,
    GovernanceConfigError,
    classification_tags,
    column_classifications,
    with_classification_tags,
)

__all__ = [
    "LEVELS",
    "GovernanceConfigError",
    "classification_tags",
    "column_classifications",
    "with_classification_tags",
]
