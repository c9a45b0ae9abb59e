"""The run-to-run noise of this host: an A/A calibration, stored (``harness calibrate``).

Two runs of the same thing differ by more than their samples explain (the machine's
state, neighbours, the scheduler, the service's start). N back-to-back A/A pairs measure
that, per metric, as the standard deviation of log values between identical runs
(``harness.stats.runs.noise_sigma``); ``harness compare`` then judges one run per side
against it, and pools it with the spread of K runs per side. A calibration holds only for
the host and the kind of run it was measured with (scenario, load settings, duration):
``mismatches`` says what differs, and the automatic use of the host's default file
requires none.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.compare.values import common_series, run_values
from harness.rundir import RunDir, write_json_atomic
from harness.stats.runs import RunNoise, noise_sigma

__all__ = ["NOISE_KIND", "TAIL_DF", "TAIL_PERCENTILE", "NoiseCalibration", "default_noise_path",
           "measure_noise", "read_noise", "write_noise"]

NOISE_KIND = "run-noise"
SCHEMA_VERSION = 1
MAX_BYTES = 5_000_000
# No metric's run-to-run noise is taken below 5 %. Measured (BENCHMARKS.md, "Comparison
# across runs"): stage p50s that were calm in 10 calibration pairs (fetch: sigma 2-3.5 %)
# moved 13-16 % between identical back-to-back runs in another hour of the same afternoon,
# which the calibration's t could not expect (3 false alarms in 29 A/A pairs; none with it).
# Ten pairs cannot see a calm metric's rare moves; 5 % is also the default margin.
SIGMA_FLOOR = 0.05
# A tail percentile's calibrated t has at most 3 degrees of freedom, however many pairs
# measured it. The run-to-run differences of tails are heavy-tailed: a p90/p99 of a 20 s run
# is a few rare events (a stall, a GC pause, a page-cache miss) that one run has and the next
# not. Measured (BENCHMARKS.md, "one run per side, calibrated"): over 110 undisturbed A/A pairs
# of the three stored calibrations, |ln(b/a)| / (sqrt(2) sigma) was beyond 6 in 17 of 2200
# p99 rows and 4 of 2200 p90 rows, where a t on the calibration's 10 pairs expects 0.3 (a t on
# 3 df: 20); p50 rows follow the t on 10 (0 beyond 6). With the 10 pairs, 13 of 120 A/A pairs
# judged one run per side ended "slower" or "faster"; with this cap, 2.
TAIL_PERCENTILE = 90.0
TAIL_DF = 3
_LOAD_KEYS = ("model", "rate", "rate_shape", "users", "arrival", "workers", "duration_s",
              "warmup_s")


def default_noise_path(host: str | None = None) -> Path:
    """``$XDG_CACHE_HOME/mlserve-harness/noise-<host>.json`` (``~/.cache`` by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in (host or socket.gethostname()))
    return base / "mlserve-harness" / f"noise-{safe[:100]}.json"


def _settings(run: RunDir) -> dict[str, Any]:
    env = run.meta.get("environment") or {}
    scenario = run.meta.get("scenario") or {}
    load = run.meta.get("load") or {}
    return {"host": env.get("hostname"), "cpu_model": env.get("cpu_model"),
            "cpu_logical": env.get("cpu_logical"), "scenario": scenario.get("path"),
            "scenario_sha256": scenario.get("sha256"),
            "load": {k: load.get(k) for k in _LOAD_KEYS}}


def _differences(mine: dict[str, Any], theirs: dict[str, Any], a: str, b: str) -> list[str]:
    out = [f"{label}: {a} {mine.get(key)!r}, {b} {theirs.get(key)!r}"
           for key, label in (("host", "host"), ("cpu_model", "CPU model"),
                              ("cpu_logical", "CPU count"), ("scenario_sha256", "scenario content"))
           if mine.get(key) != theirs.get(key)]
    ml, tl = mine.get("load") or {}, theirs.get("load") or {}
    return out + [f"load setting {k}: {a} {ml.get(k)!r}, {b} {tl.get(k)!r}"
                  for k in _LOAD_KEYS if ml.get(k) != tl.get(k)]


@dataclass(frozen=True)
class NoiseCalibration:
    """Per-metric run-to-run noise (``noise.sigma[key]``, log scale, on ``noise.pairs``
    degrees of freedom) and the settings of the runs it was measured with."""

    noise: RunNoise
    settings: dict[str, Any]
    created: float = 0.0
    runs: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

    def sigma(self, key: str) -> float | None:
        """The metric's noise, never below ``SIGMA_FLOOR``; None when not calibrated."""
        s = self.noise.sigma.get(key)
        return None if s is None else max(s, SIGMA_FLOOR)

    @property
    def pairs(self) -> int:
        return self.noise.pairs

    def df(self, percentile: float) -> int:
        """The degrees of freedom of the t a metric at this percentile is judged with: the
        pairs, at most ``TAIL_DF`` from ``TAIL_PERCENTILE`` up (heavy-tailed, see above)."""
        return min(self.pairs, TAIL_DF) if percentile >= TAIL_PERCENTILE else self.pairs

    def key_df(self, key: str) -> int:
        """``df`` of a stored metric key (``name|series|p99``); the pairs when the key names
        no percentile."""
        try:
            return self.df(float(key.rsplit("|p", 1)[1]))
        except (IndexError, ValueError):
            return self.pairs

    def mismatches(self, run: RunDir) -> list[str]:
        """What differs between the calibration's runs and ``run`` (empty: it applies)."""
        return _differences(self.settings, _settings(run), "calibration", "run")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "kind": NOISE_KIND, "created": self.created,
                "host": self.noise.host, "pairs": self.noise.pairs,
                "settings": self.settings, "runs": list(self.runs),
                "method": "sigma^2 = sum(ln(b/a)^2) / 2N over N A/A pairs, per metric",
                "sigma": {k: round(v, 6) for k, v in sorted(self.noise.sigma.items())}}

    @classmethod
    def from_dict(cls, doc: Any, path: Path | None = None) -> NoiseCalibration:
        where = str(path) if path else "noise calibration"
        if not isinstance(doc, dict) or doc.get("kind") != NOISE_KIND:
            raise ValueError(f"{where}: not a noise calibration (kind must be {NOISE_KIND!r})")
        if int(doc.get("schema_version") or 0) > SCHEMA_VERSION:
            raise ValueError(f"{where}: schema version {doc.get('schema_version')!r} is newer "
                             f"than this harness reads ({SCHEMA_VERSION})")
        sigma = doc.get("sigma")
        if not isinstance(sigma, dict) or len(sigma) > 100_000:
            raise ValueError(f"{where}: sigma must be a mapping of metric to number")
        try:
            noise = RunNoise({str(k): v for k, v in sigma.items()}, int(doc.get("pairs") or 0),
                             str(doc.get("host") or ""))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        raw = doc.get("settings")
        settings: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return cls(noise, settings, float(doc.get("created") or 0.0),
                   tuple(str(r) for r in (doc.get("runs") or [])[:1000]), path)


def measure_noise(pairs: Sequence[tuple[RunDir, RunDir]],
                  percentiles: Sequence[float] = (50, 90, 99)) -> NoiseCalibration:
    """The noise of every metric the pairs' runs share, from N >= 2 A/A pairs (each pair
    two runs made back to back with the same settings). Pairs in which the machine itself
    changed (``machine.disturbed``, which ``compare_runs`` refuses to judge) are kept: they
    are this host's noise too, and keeping them errs on the side of fewer false alarms."""
    if len(pairs) < 2:
        raise ValueError(f"a noise calibration needs >= 2 A/A pairs (got {len(pairs)})")
    runs = [r for pair in pairs for r in pair]
    settings = _settings(runs[0])
    for run in runs[1:]:
        differs = _differences(settings, _settings(run), runs[0].path.name, run.path.name)
        if differs:
            raise ValueError(f"the A/A runs must share their settings: {run.path.name} "
                             f"differs ({differs[0]})")
    sigma: dict[str, float] = {}
    for sid in common_series(runs):
        values = [(run_values(a, sid, percentiles), run_values(b, sid, percentiles))
                  for a, b in pairs]
        for p in percentiles:
            usable = [(va[float(p)].us, vb[float(p)].us) for va, vb in values]
            if len(usable) == len(pairs) and all(x is not None and y is not None
                                                 for x, y in usable):
                s, _ = noise_sigma([(float(x), float(y)) for x, y in usable])  # type: ignore[arg-type]
                if math.isfinite(s):
                    sigma[sid.key(p)] = s
    host = str(settings.get("host") or "")
    return NoiseCalibration(RunNoise(sigma, len(pairs), host), settings,
                            time.time(), tuple(str(r.path) for r in runs))


def read_noise(path: Path) -> NoiseCalibration:
    """A stored calibration; ValueError (or OSError) names the file and the problem."""
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path}: a noise calibration must be at most {MAX_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    return NoiseCalibration.from_dict(doc, path)


def write_noise(calibration: NoiseCalibration, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, calibration.to_dict())
    return path
