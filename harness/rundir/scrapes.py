"""The /metrics scrapes of a run directory (``metrics/*.prom``), read back and compared.

``harness.run.collectors.prometheus`` writes the files (the text exposition exactly as
served); the analysis reads them here: ``read_scrape(run_dir, "start")``, then the increase
of a counter (:func:`counter_values`) or of a histogram's buckets (:func:`histogram_delta`)
over the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Labels", "counter_values", "histogram_buckets", "histogram_delta",
           "parse_exposition", "read_scrape"]

Labels = tuple[tuple[str, str], ...]


def parse_exposition(text: str) -> dict[str, dict[Labels, float]]:
    """Sample name -> {sorted label pairs -> value}, e.g. ``x_bucket`` with ``le``."""
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
    return out


def read_scrape(run_dir: Path, label: str) -> dict[str, dict[Labels, float]] | None:
    """The parsed ``metrics/<label>.prom`` of a run, or None when it was not scraped."""
    path = Path(run_dir) / "metrics" / f"{label}.prom"
    if not path.is_file():
        return None
    return parse_exposition(path.read_text())


def histogram_buckets(parsed: Mapping[str, Mapping[Labels, float]], metric: str
                      ) -> dict[Labels, list[tuple[float, float]]]:
    """Cumulative buckets of histogram ``metric`` per label set (``le`` removed), sorted."""
    out: dict[Labels, list[tuple[float, float]]] = {}
    for labels, value in parsed.get(f"{metric}_bucket", {}).items():
        le = dict(labels).get("le")
        if le is None:
            continue
        key = tuple((k, v) for k, v in labels if k != "le")
        out.setdefault(key, []).append((float(le), value))
    return {k: sorted(v) for k, v in out.items()}


def histogram_delta(start: Mapping[str, Mapping[Labels, float]] | None,
                    end: Mapping[str, Mapping[Labels, float]], metric: str
                    ) -> dict[Labels, tuple[list[float], list[float]]]:
    """Per label set: (upper bounds, per-bucket counts) observed between two scrapes.

    Cumulative buckets become per-bucket counts; a series absent at the start counts
    from zero. A counter reset (end < start, the service restarted) clamps to the end value.
    """
    first = histogram_buckets(start, metric) if start is not None else {}
    out: dict[Labels, tuple[list[float], list[float]]] = {}
    for key, buckets in histogram_buckets(end, metric).items():
        before = dict(first.get(key, []))
        les = [le for le, _ in buckets]
        cum = []
        for le, v in buckets:
            d = v - before.get(le, 0.0)
            cum.append(v if d < 0 else d)
        per = [cum[0]] + [max(0.0, b - a) for a, b in zip(cum, cum[1:], strict=False)]
        out[key] = (les, per)
    return out


def counter_values(start: Mapping[str, Mapping[Labels, float]] | None,
                   end: Mapping[str, Mapping[Labels, float]], sample: str
                   ) -> dict[Labels, float]:
    """Increase of counter ``sample`` (e.g. ``x_total``) per label set between two scrapes."""
    before = (start or {}).get(sample, {})
    out = {}
    for key, v in end.get(sample, {}).items():
        d = v - before.get(key, 0.0)
        out[key] = v if d < 0 else d
    return out
