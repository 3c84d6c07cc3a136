"""A freshness policy judged the way Dagster's freshness evaluators judge it, for tests and benches.

Dagster's own evaluator is internal (``dagster/_core/definitions/freshness_evaluator.py``); this
is its rule on the latest materialization, so a test or ``bench/bench_quality.py`` can say whether
an asset would show FAIL at a given moment.
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg
from croniter import croniter


def fresh(policy: dg.FreshnessPolicy, materialized: list[datetime], now: datetime) -> bool:
    """Not FAIL at ``now``, judged on the latest materialization at or before ``now``."""
    done = [m for m in materialized if m <= now]
    if not done:
        return True  # UNKNOWN before the first materialization
    last = max(done)
    if hasattr(policy, "fail_window"):  # a time window: FAIL once it has passed
        return now - last < policy.fail_window.to_timedelta()
    # a deadline cron: fresh when materialized since the last completed deadline minus the bound
    deadline = croniter(policy.deadline_cron, now).get_prev(datetime)  # type: ignore[attr-defined]
    return last >= deadline - policy.lower_bound_delta  # type: ignore[attr-defined]
