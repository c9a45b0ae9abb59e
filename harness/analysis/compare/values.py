"""What a comparison across runs compares: the series of a run and each run's percentiles.

A series is (request name, metric, stage): ``client``, one per Server-Timing stage the
request name has in every run, and ``residual``; ``*`` (all names merged) is added when
the runs hold more than one name. Each run gives one value per series and percentile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from harness.analysis.slo import request_names
from harness.rundir import RunDir
from harness.rundir.records import SeriesEntry
from harness.stats import percentiles as percentiles_of

__all__ = ["RunValue", "SeriesId", "common_series", "hist_values", "min_samples", "run_values"]


@dataclass(frozen=True, order=True)
class SeriesId:
    """One latency series of a request name; ``stage`` only for metric ``stage``."""

    name: str
    metric: str
    stage: str | None = None

    @property
    def label(self) -> str:
        """``client``, ``residual`` or the stage's name (as the tables print it)."""
        return self.stage if self.metric == "stage" and self.stage else self.metric

    def key(self, percentile: float) -> str:
        """The key of one metric in a noise calibration: ``name|series|p50``."""
        series = f"stage:{self.stage}" if self.metric == "stage" else self.metric
        return f"{self.name}|{series}|p{percentile:g}"


@dataclass(frozen=True)
class RunValue:
    """A series' percentile in one run (µs; None when the run has too few samples for it),
    the run's number of samples of that series, and ``se``: the standard error of the
    percentile's log from the run's own samples (``hist_values``), None without a value."""

    us: int | None
    n: int
    se: float | None = None


def min_samples(percentile: float) -> int:
    """Samples a run needs for its p-th percentile to be a value below its maximum:
    ceil(1 / (1 - p)): 2 for p50, 10 for p90, 100 for p99, 1000 for p99.9."""
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100) (got {percentile!r})")
    return math.ceil(1.0 / (1.0 - percentile / 100.0) - 1e-9)


def _stages(run: RunDir, name: str) -> set[str]:
    return {s.stage for s in map(SeriesEntry.from_dict, run.series()) if s.metric == "stage"
            and s.name == name and s.tag is None and s.stage}


def common_series(runs: Sequence[RunDir]) -> list[SeriesId]:
    """The series every run has: per request name client, its stages, residual; and ``*``
    (client and residual of all names merged) when there is more than one name."""
    if not runs:
        return []
    names = sorted(set.intersection(*(set(request_names(r)) for r in runs)))
    out: list[SeriesId] = []
    for name in names:
        stages = sorted(set.intersection(*(_stages(r, name) for r in runs)))
        out.append(SeriesId(name, "client"))
        out += [SeriesId(name, "stage", s) for s in stages]
        out.append(SeriesId(name, "residual"))
    if len(names) > 1:
        out += [SeriesId("*", "client"), SeriesId("*", "residual")]
    return out


def run_values(run: RunDir, series: SeriesId, percentiles: Sequence[float]
               ) -> dict[float, RunValue]:
    """The run's value of each percentile of ``series`` (measured window only)."""
    return hist_values(run.histogram(series.metric, series.name, stage=series.stage),
                       percentiles)


def _rank_band(p: float, n: int) -> tuple[float, float]:
    """The percentiles one standard deviation of the order statistic below and above the
    p-th of n samples: ranks n*p/100 -+ sqrt(n * p/100 * (1 - p/100))."""
    q = p / 100.0
    sd = math.sqrt(n * q * (1.0 - q))
    lo, hi = max(1.0, n * q - sd), min(float(n), n * q + sd)
    return 100.0 * lo / n, 100.0 * hi / n


def hist_values(hist: HdrHistogram, percentiles: Sequence[float]) -> dict[float, RunValue]:
    """Each percentile of one histogram as a run's value (None below ``min_samples``), with
    its sampling error: half the log distance between the values one order-statistic
    standard deviation below and above it (distribution-free, the same ranks the samples'
    intervals use), one pass over the counts for all of them."""
    n = int(hist.get_total_count())
    if n == 0:
        return {float(p): RunValue(None, 0) for p in percentiles}
    bands = {float(p): _rank_band(float(p), n) for p in percentiles}
    wanted = sorted({float(p) for p in percentiles} | {x for b in bands.values() for x in b})
    got = percentiles_of(hist, wanted)
    out = {}
    for p in map(float, percentiles):
        value = int(got[p]) if n >= min_samples(p) and got[p] > 0 else None
        lo, hi = (got[x] for x in bands[p])
        se = (math.log(hi) - math.log(lo)) / 2.0 if value and lo > 0 and hi > 0 else None
        out[p] = RunValue(value, n, se)
    return out
