"""Decision rules for the anomaly checks: pure functions of a metric's history.

Every rule is robust (median and MAD rather than mean and stddev) so that one bad day in the
history does not widen the band enough to hide the next one, and every result carries the numbers
that decided it. No rule fires during warm-up: with fewer than ``warmup`` earlier partitions
there is no baseline worth trusting, so the result passes with ``in_warmup=True``.
"""

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

MAD_TO_SIGMA = 1.4826  # MAD * 1.4826 estimates the standard deviation of normal data
MIN_RELATIVE_SCALE = 0.01  # the spread is never taken below 1 % of the baseline
# Same-weekday points needed before the baseline becomes seasonal. Three is too few: the MAD of
# three points is dominated by one of them, and on the demo shop's data (weekend +30 %, a slow
# ±10 % wave) it fired on a normal day; four gave no false alarm over 330 simulated days.
WEEKDAY_MIN_POINTS = 4


@dataclass(frozen=True)
class AnomalyResult:
    """The outcome of one rule, with everything that decided it."""

    passed: bool
    observed: float | None
    low: float | None
    high: float | None
    baseline: float | None
    method: str
    in_warmup: bool
    history_points: int
    scale: float | None = None
    score: float | None = None
    warmup: int | None = None  # earlier partitions needed before judging (set in warm-up)

    @property
    def band(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def warmup_text(self) -> str:
        """``warm-up: 3 of 7`` earlier partitions seen."""
        return f"warm-up: {self.history_points} of {self.warmup} earlier partitions"

    def describe(self, what: str) -> str:
        if self.in_warmup:
            seen = f"{what} = {_fmt(self.observed)}"
            return f"{seen}, not judged yet ({self.warmup_text})"
        if self.band is None:
            return f"{what}: {self.method}"
        verdict = "within" if self.passed else "OUTSIDE"
        band = f"[{_fmt(self.low)}, {_fmt(self.high)}]"
        return (
            f"{what} = {_fmt(self.observed)} {verdict} expected {band} "
            f"(baseline {_fmt(self.baseline)}, {self.method}, {self.history_points} points)"
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _warmup(observed: float | None, points: int, warmup: int) -> AnomalyResult:
    return AnomalyResult(True, observed, None, None, None, "warmup", True, points, warmup=warmup)


def robust_center_scale(values: Sequence[float]) -> tuple[float, float]:
    """Median and MAD-based sigma, floored so a perfectly flat history still has a band.

    The floor is 1 % of the median (0.1 when the median is 0): a flat history means the metric is
    near-deterministic, so a small band is right, but not one that fires on rounding noise.
    """
    center = statistics.median(values)
    scale = MAD_TO_SIGMA * statistics.median(abs(v - center) for v in values)
    scale = max(scale, MIN_RELATIVE_SCALE * abs(center))
    return center, scale if scale > 0 else 0.1


def prediction_k(z: float, points: int) -> float:
    """``z`` widened for a center and spread estimated from ``points`` earlier values.

    A new value is compared with a median and a MAD of a few points, which are themselves
    uncertain: with 7 points a ±4 sigma band fails about one normal day in a hundred (Student's
    t, 6 degrees of freedom), not one in 16,000 (bench/bench_quality.py: 3 % of its normal
    drift evaluations failed before). This is the Student-t quantile of the same tail probability
    as ``z`` (Cornish-Fisher expansion, ``points - 1`` degrees of freedom), times
    sqrt(1 + 1/points) for a prediction: 10.1 at 7 points, 4.8 at 28, 4.4 at 56.
    """
    nu = max(points - 1, 1)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return (z + g1 / nu + g2 / nu**2 + g3 / nu**3) * math.sqrt(1 + 1 / max(points, 1))


def volume_anomaly(
    history_counts: Sequence[tuple[date, int]],
    new_count: int,
    *,
    new_date: date | None = None,
    warmup: int = 7,
    k: float = 4.0,
    weekday_min_points: int = WEEKDAY_MIN_POINTS,
    min_relative_scale: float = 0.1,
    min_relative_scale_unseasonal: float = 0.15,
) -> AnomalyResult:
    """Row count outside median ± k·MAD-sigma of earlier partitions.

    The baseline is seasonal (same weekday as ``new_date``) when the history has at least
    ``weekday_min_points`` such days, because traffic differs by weekday. With fewer such days
    (the first four weeks) the center is already the median of the same weekdays seen so far,
    and the spread that of all days relative to their median: a B2B table's weekend at a third
    of its weekdays is no anomaly in week two either (bench/bench_quality.py: 2.4 % of its
    normal volume evaluations failed before). Without ``new_date`` all days are used. The sigma
    is at least ``min_relative_scale`` of the median (wider, ``min_relative_scale_unseasonal``,
    before the weekday baseline exists): very regular history gives a tiny MAD, and a normal
    weekend peak must not fire (a 10x day still does). It is also at least sqrt(median), the
    counting noise of a Poisson count: a table of one or two rows a day (SQLMesh's `init`
    example) has days with none, and those are no anomaly either.
    """
    points = len(history_counts)
    if points < warmup:
        return _warmup(new_count, points, warmup)
    method = "median_mad"
    values = [float(c) for _, c in history_counts]
    same_day = []
    if new_date is not None:
        same_day = [float(c) for d, c in history_counts if d.weekday() == new_date.weekday()]
        if len(same_day) >= weekday_min_points:
            values, method = same_day, "median_mad_weekday"
        elif same_day:
            method = "median_weekday_early"
    center, scale = robust_center_scale(values)
    if method == "median_weekday_early":  # the weekday's own level, the spread of all days
        relative = scale / abs(center) if center else 0.0
        center = statistics.median(same_day)
        scale = relative * abs(center)
    floor = min_relative_scale if method == "median_mad_weekday" else min_relative_scale_unseasonal
    scale = max(scale, floor * abs(center), math.sqrt(max(abs(center), 1.0)))
    low, high = max(0.0, center - k * scale), center + k * scale
    score = (new_count - center) / scale if scale else 0.0
    return AnomalyResult(
        passed=abs(score) <= k,
        observed=float(new_count),
        low=low,
        high=high,
        baseline=center,
        method=method,
        in_warmup=False,
        history_points=len(values),
        scale=scale,
        score=score,
    )


def null_rate_drift(
    history_fractions: Sequence[float | None],
    new_fraction: float | None,
    *,
    warmup: int = 7,
    max_jump: float = 0.2,
) -> AnomalyResult:
    """Null fraction more than ``max_jump`` (absolute) away from its historical median.

    An absolute jump rather than a z-score: null rates are usually flat at 0, where any relative
    rule would fire on the first null.
    """
    history = [f for f in history_fractions if f is not None]
    if len(history) < warmup:
        return _warmup(new_fraction, len(history), warmup)
    if new_fraction is None:
        return AnomalyResult(True, None, None, None, None, "empty_partition", False, len(history))
    center = statistics.median(history)
    low, high = max(0.0, center - max_jump), min(1.0, center + max_jump)
    return AnomalyResult(
        passed=abs(new_fraction - center) <= max_jump,
        observed=new_fraction,
        low=low,
        high=high,
        baseline=center,
        method="median_abs_jump",
        in_warmup=False,
        history_points=len(history),
        score=new_fraction - center,
    )


def distribution_drift(
    history_means: Sequence[float | None],
    new_mean: float | None,
    *,
    warmup: int = 7,
    z: float = 4.0,
) -> AnomalyResult:
    """The partition's mean more than ``z`` robust standard deviations from the usual mean.

    The spread is that of the daily means themselves (not of values within a day), which is the
    only one defined for one-row-per-day marts and the one that says what a normal day looks like.
    It is estimated from the history, so ``z`` is widened for a short one (``prediction_k``).
    """
    history = [m for m in history_means if m is not None]
    if len(history) < warmup:
        return _warmup(new_mean, len(history), warmup)
    if new_mean is None:
        return AnomalyResult(True, None, None, None, None, "no_values", False, len(history))
    center, scale = robust_center_scale(history)
    score = (new_mean - center) / scale
    width = prediction_k(z, len(history))
    return AnomalyResult(
        passed=abs(score) <= width,
        observed=new_mean,
        low=center - width * scale,
        high=center + width * scale,
        baseline=center,
        method="robust_z_of_mean",
        in_warmup=False,
        history_points=len(history),
        scale=scale,
        score=score,
    )
