"""Flags and helpers shared by the commands that judge a comparison (compare, ab, versions).

Not a command (the leading underscore keeps ``command_modules`` from loading it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.analysis.compare import Judged, NoiseCalibration
    from harness.rundir import RunDir

__all__ = ["add_judging_flags", "judging_kwargs", "load_noise", "parse_percentiles",
           "print_judged"]


def add_judging_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                      noise: bool = True, control: bool = False) -> None:
    p.add_argument("--min-effect", type=float, default=None, metavar="PCT",
                   help="practical margin: a difference under PCT %% of A is never "
                        "'slower' or 'faster' (default 5)")
    p.add_argument("--percentiles", default="50,90,99", help="default 50,90,99")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="of the intervals; 1 - confidence is the family-wise false-alarm "
                        "rate Holm keeps (default 0.95)")
    p.add_argument("--slo", type=Path, help="also check each run against this SLO file")
    if noise:
        p.add_argument("--noise", type=Path, metavar="FILE",
                       help="this host's run-to-run noise (harness calibrate); default: "
                            "~/.cache/mlserve-harness/noise-HOST.json when it exists and "
                            "was measured with the same settings")
        p.add_argument("--no-noise", action="store_true",
                       help="use no noise calibration, not even the host's default")
    if control:
        p.add_argument("--control", metavar="NAME", action="append",
                       help="a request name that is the same in A and B (a model the release "
                            "did not touch): every other name's p50 and p90 are judged "
                            "divided by its, which cancels the machine's speed shared by "
                            "both; repeat for several (divided by their geometric mean, "
                            "less noisy); needs >= 2 runs per side")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def parse_percentiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--percentiles must be numbers separated by commas (got {text!r})") \
            from None
    if not values or not all(0 < v < 100 for v in values):
        raise ValueError(f"--percentiles must be in (0, 100) (got {text!r})")
    return values


def judging_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """percentiles, confidence, min_effect (a fraction) and slo from the flags."""
    from harness.analysis.compare import DEFAULT_MIN_EFFECT
    from harness.analysis.slo import load_slo

    pct = args.min_effect
    if pct is not None and not 0 <= pct < 1000:
        raise ValueError(f"--min-effect must be >= 0 and < 1000 %% (got {pct!r})")
    out = {"percentiles": parse_percentiles(args.percentiles), "confidence": args.confidence,
           "min_effect": DEFAULT_MIN_EFFECT if pct is None else pct / 100.0,
           "slo": load_slo(args.slo) if args.slo is not None else None}
    if getattr(args, "control", None) is not None:
        out["control"] = args.control
    return out


def load_noise(args: argparse.Namespace, run: RunDir) -> NoiseCalibration | None:
    """--noise FILE (its host must be the run's), else the host's default file when its
    settings match the run's (said on stderr either way), else None."""
    from harness.analysis.compare import default_noise_path, read_noise

    if getattr(args, "no_noise", False):
        return None
    if args.noise is not None:
        noise = read_noise(args.noise)
        host = (run.meta.get("environment") or {}).get("hostname")
        if noise.noise.host and host and noise.noise.host != host:
            raise ValueError(f"--noise {args.noise} was measured on host "
                             f"{noise.noise.host!r}; the runs are from {host!r}")
        return noise
    default = default_noise_path((run.meta.get("environment") or {}).get("hostname"))
    if not default.is_file():
        return None
    noise = read_noise(default)
    differs = noise.mismatches(run)
    if differs:
        print(f"note: this host's noise calibration {default} is not used: it was measured "
              f"with other settings ({differs[0]}); --noise FILE to use it anyway",
              file=sys.stderr)
        return None
    return noise


def print_judged(result: Judged, as_json: bool) -> None:
    from harness.analysis.compare import format_judged

    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in format_judged(result):
            print(line)
