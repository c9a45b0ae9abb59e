"""Comparing A and B: two runs, K runs per side, or two request names of one run.

- ``pairwise``: ``compare(a, b)``: two runs or two names, B - A per request name, series
  and percentile with distribution-free intervals of the samples (the report's table);
  ``comparability`` (what makes two runs incomparable, what they vary on purpose).
- ``runs``: ``compare_runs(a_runs, b_runs)``: the run as the unit, B/A judged against the
  spread between runs and this host's noise calibration (``harness compare``, ``harness ab``).
- ``names``: ``compare_names(run, name_a, name_b)``: the interleaved comparison in one run
  (``harness versions``).
- ``control``: dividing each run by an unchanged request name (``--control``), which cancels
  the machine's speed shared by both.
- ``noise``: the stored A/A calibration of run-to-run noise (``harness calibrate``).
- ``judged``: Holm over every row, the verdicts with a practical margin, per-name verdicts
  and the exit code; ``report``: the table and the verdict lines.
"""

from __future__ import annotations

from harness.analysis.compare.judged import (
    DEFAULT_MIN_EFFECT,
    EXIT_INCONCLUSIVE,
    EXIT_NO_REGRESSION,
    EXIT_REGRESSION,
    Judged,
    JudgedRow,
    NameVerdict,
)
from harness.analysis.compare.names import NAMES_PERCENTILES, compare_names
from harness.analysis.compare.noise import (
    NoiseCalibration,
    default_noise_path,
    measure_noise,
    read_noise,
    write_noise,
)
from harness.analysis.compare.pairwise import (
    DEFAULT_PERCENTILES,
    CompareRow,
    Comparison,
    comparability,
    compare,
    format_comparison,
)
from harness.analysis.compare.report import format_judged, verdict_lines
from harness.analysis.compare.runs import RUNS_PERCENTILES, compare_runs
from harness.analysis.compare.values import SeriesId

__all__ = ["DEFAULT_MIN_EFFECT", "DEFAULT_PERCENTILES", "EXIT_INCONCLUSIVE",
           "EXIT_NO_REGRESSION", "EXIT_REGRESSION", "NAMES_PERCENTILES", "RUNS_PERCENTILES",
           "CompareRow", "Comparison", "Judged", "JudgedRow", "NameVerdict",
           "NoiseCalibration", "SeriesId", "comparability", "compare", "compare_names",
           "compare_runs", "default_noise_path", "format_comparison", "format_judged",
           "measure_noise", "read_noise", "verdict_lines", "write_noise"]
