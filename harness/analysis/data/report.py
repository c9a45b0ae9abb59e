"""``harness data``: gather the data checks of a run directory and format their table.

Inputs of a run: ``RUN/traffic/`` (the service's recording, ``--record-traffic``) or any
replay file given as ``traffic``; ``RUN/metrics/{start,end}.prom`` (Prometheus collector).
Baseline: the training reference (default) or another run, whose traffic becomes the
reference distribution (same format as reference_stats.json) and whose predictions the
baseline histogram.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.data.checks import (
    MISSING_METRIC,
    NULL_METRIC,
    ROWS_METRIC,
    DataReport,
    check_features,
    null_rate_increases,
    prediction_shift,
    run_predictions,
)
from harness.analysis.data.inputs import (
    ABSENT,
    Reference,
    TrafficSample,
    join_store,
    load_reference,
    traffic_sample,
)
from harness.analysis.data.popularity import (
    design_effect,
    effective_n_for,
    model_collision,
    model_keys,
    overlap,
)
from harness.analysis.rules.thresholds import POPULARITY_COLLISION, POPULARITY_SHARED
from harness.rundir import RunDir
from harness.rundir.replay import ReplayFormatError
from harness.rundir.scrapes import counter_values, read_scrape
from harness.stats import drift

__all__ = ["check_run", "reference_from_sample", "format_data_report", "write_data_report"]

_QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


def reference_from_sample(sample: TrafficSample, like: Reference) -> Reference:
    """A baseline run's traffic as a reference, binned as reference_stats.json bins."""
    features: dict[str, dict[str, Any]] = {}
    for name, ref in like.features.items():
        col = [v for v in sample.values.get(name, []) if v is not ABSENT]
        if not col:
            continue
        nulls = sum(1 for v in col if v is None)
        base = {"kind": ref["kind"], "source": ref.get("source"), "count": len(col),
                "null_rate": nulls / len(col)}
        if ref["kind"] == "numeric":
            xs = np.array([float(v) for v in col if isinstance(v, (int, float))
                           and not isinstance(v, bool) and math.isfinite(v)])
            if xs.size:
                lo, hi = np.quantile(xs, [0.005, 0.995])
                hi = hi if hi > lo else lo + 1.0
                edges = np.linspace(lo, hi, 21)
                counts, _ = np.histogram(np.clip(xs, lo, hi), bins=edges)
                base.update(sample=xs.tolist(), std=float(xs.std()), min=float(xs.min()),
                            max=float(xs.max()),
                            quantiles={f"{q:g}": float(v) for q, v in
                                       zip(_QUANTILES, np.quantile(xs, _QUANTILES),
                                           strict=True)},
                            histogram={"edges": edges.tolist(), "counts": counts.tolist()})
        else:
            cats = [v for v in col if isinstance(v, str)]
            freq: dict[str, float] = {}
            for v in cats:
                freq[v] = freq.get(v, 0.0) + 1.0
            for c in ref.get("frequencies", {}):
                freq.setdefault(c, 0.0)
            base["frequencies"] = {k: v / max(len(cats), 1) for k, v in freq.items()}
        features[name] = base
    return Reference(features, {}, like.schema, like.store, "baseline run traffic")


def _sample(run_dir: Path, traffic: str | Path | None, reference: Reference,
            join: bool, warnings: list[str]) -> TrafficSample | None:
    src = Path(traffic) if traffic is not None else run_dir / "traffic"
    if not src.exists():
        warnings.append(f"{run_dir.name}: no recorded traffic ({src} missing; run with "
                        "--record-traffic or pass --traffic FILE): no input checks")
        return None
    try:
        sample = traffic_sample(src)
    except ReplayFormatError as exc:
        warnings.append(f"{run_dir.name}: traffic unreadable: {exc}")
        return None
    if join and reference.store is not None:
        join_store(sample, reference.store)
    for why, n in sample.skipped.items():
        warnings.append(f"{run_dir.name}: {n} requests skipped: {why}")
    if not sample.rows:
        warnings.append(f"{run_dir.name}: the traffic holds no predict request with a body")
    return sample


def _missing(run_dir: Path) -> dict[str, dict[str, float]]:
    end = read_scrape(run_dir, "end")
    if end is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    for labels, v in counter_values(read_scrape(run_dir, "start"), end,
                                    MISSING_METRIC).items():
        if v > 0:
            lab = dict(labels)
            out.setdefault(lab.get("model", "?"), {})[lab.get("feature", "?")] = v
    return out


def null_metric_pairs(scrape: dict[str, Any]) -> list[tuple[str, str]]:
    """(null counter, rows counter) pairs a service exports: the reference service's
    ``refsvc_null_features_total`` / ``refsvc_feature_rows_total``, or any
    ``PREFIX_null_features_total{model,feature}`` with its ``PREFIX_feature_rows_total{model}``
    (the FastAPI example's ``fastsvc_*``): the convention, whatever the service's prefix."""
    suffix = NULL_METRIC.removeprefix("refsvc")
    rows_suffix = ROWS_METRIC.removeprefix("refsvc")
    pairs = []
    for name in sorted(scrape):
        if name.endswith(suffix):
            rows = name[:-len(suffix)] + rows_suffix
            if rows in scrape:
                pairs.append((name, rows))
    return pairs


def _null_counts(run_dir: Path) -> tuple[dict[tuple[str, str], tuple[float, float]], bool]:
    """(model, feature) -> (null rows, rows) over the window, from the service's metrics,
    and whether those metrics counted any feature rows at all."""
    end = read_scrape(run_dir, "end")
    if end is None:
        return {}, False
    start = read_scrape(run_dir, "start")
    out, counted = {}, False
    for null_metric, rows_metric in null_metric_pairs(end):
        rows = {dict(k).get("model", "?"): v
                for k, v in counter_values(start, end, rows_metric).items()}
        counted = counted or any(v > 0 for v in rows.values())
        for labels, v in counter_values(start, end, null_metric).items():
            lab = dict(labels)
            model = lab.get("model", "?")
            if rows.get(model):
                out[(model, lab.get("feature", "?"))] = (v, rows[model])
    return out, counted


def _null_features(run: Path, baseline: Path | None, training: Reference,
                   warnings: list[str]) -> list[dict[str, Any]]:
    """Null-rate rises after assembly: against the baseline run's own rates when its metrics
    counted rows (a feature with no null series there had rate 0), else against training."""
    now, _ = _null_counts(run)
    if not now:
        return []
    if baseline is not None:
        before, counted = _null_counts(baseline)
        if counted:
            rates = {k: n / r for k, (n, r) in before.items() if r}
            return null_rate_increases(now, rates, "baseline run")
        warnings.append(f"{baseline.name}: its metrics count no feature rows "
                        "(refsvc_feature_rows_total): null rates are judged against training")
    rates = {(m, f): float(training.features.get(f, {}).get("null_rate", 0.0))
             for (m, f) in now}
    return null_rate_increases(now, rates, "training")


def _collision(sample: TrafficSample | None, model: str) -> tuple[float, str]:
    """The chance two of the model's predictions share an entity: from the recorded traffic,
    else assumed as production-like traffic's (POPULARITY_COLLISION)."""
    q = model_collision(sample, model) if sample is not None else None
    return (q, "traffic") if q is not None else (POPULARITY_COLLISION, "assumed")


def _same_hot_set(model: str, run: Path, baseline: Path,
                  samples: tuple[TrafficSample | None, ...]) -> bool:
    """Whether a run and its baseline ask for the same popular entities: by their recorded
    traffic when both have it, else when they ran the same scenario file with the same
    arguments (the traffic model's seed among them)."""
    if len(samples) > 1 and samples[0] is not None and samples[1] is not None:
        return overlap(model_keys(samples[0], model),
                       model_keys(samples[1], model)) >= POPULARITY_SHARED

    def traffic(d: Path) -> tuple[Any, ...]:
        meta = RunDir(d).meta
        argv = [str(a) for a in meta.get("command_line") or []]
        return ((meta.get("scenario") or {}).get("sha256"),
                tuple(argv[argv.index("--") + 1:]) if "--" in argv else ())
    return traffic(run)[0] is not None and traffic(run) == traffic(baseline)


def _n_eff(model: str, n: float, bn: float, samples: tuple[TrafficSample | None, ...],
           shared: bool | None) -> tuple[float, str]:
    """The effective size of the run's predictions for the shift test. Against the training
    holdout (``shared`` None; one row per entity) or a baseline with other popular entities
    (False): the larger design effect of the two sides. Against a baseline with the same
    popular entities (True), both draw from one popularity-weighted mixture: none."""
    q, source = _collision(samples[0], model)
    if shared:
        return n, "same popular entities as the baseline"
    deff = design_effect(n, effective_n_for(n, q))
    if shared is False and len(samples) > 1 and bn > 0:
        qb, _ = _collision(samples[1], model)
        deff = max(deff, design_effect(bn, effective_n_for(bn, qb)))
    return n / deff, source


def _predictions(report: DataReport, run: Path, baseline: str | Path | None,
                 training: Reference, samples: tuple[TrafficSample | None, ...]) -> None:
    """Prediction shift per (model, version): against the baseline run's predictions when
    given (same traffic model, same popularity), else the training holdout; the test
    counts the predictions as the independent observations they are worth."""
    preds = run_predictions(run)
    if not preds:
        report.warnings.append(f"{run.name}: no metrics/end.prom with prediction histograms: "
                               "no prediction shift")
    base_preds = run_predictions(Path(baseline)) if baseline is not None else {}
    for (model, version), (edges, counts) in sorted(preds.items()):
        if baseline is not None:
            other = base_preds.get((model, version))
            if other is None or other[0] != edges:
                report.warnings.append(f"{model} {version}: not in the baseline's metrics "
                                       "(or binned differently)")
                continue
            base_counts, label = other[1], "baseline run"
        else:
            hist = training.models.get(model, {}).get(version, {}).get("probability", {}) \
                .get("histogram")
            if not hist or not np.allclose(hist["edges"], edges):
                report.warnings.append(f"{model} {version}: the training reference has no "
                                       "probability histogram on the service's buckets")
                continue
            base_counts, label = hist["counts"], "training holdout"
        shared = None if baseline is None else _same_hot_set(model, run, Path(baseline), samples)
        n_eff = _n_eff(model, sum(counts), sum(base_counts), samples, shared)
        report.predictions.append(prediction_shift(model, version, edges, counts,
                                                   base_counts, label, n_eff))


def check_run(run_dir: str | Path, baseline: str | Path | None = None, *,
              reference: str | Path | None = None, traffic: str | Path | None = None,
              join: bool = True) -> DataReport:
    """All data checks of a run against the training reference or a ``baseline`` run."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"run directory not found: {str(run)!r}")
    training = load_reference(reference)
    report = DataReport(run.name, Path(baseline).name if baseline else "training reference")
    sample = _sample(run, traffic, training, join, report.warnings)
    ref, base_sample = training, None
    if baseline is not None:
        base_sample = _sample(Path(baseline), None, training, join, report.warnings)
        ref = reference_from_sample(base_sample, training) if base_sample else Reference(
            {}, {}, training.schema)
    if sample is not None:
        report.features = check_features(ref, sample)
        report.traffic = {"requests": sample.requests, "rows": sample.rows,
                          "store_joined": sample.joined, "entities_not_found": sample.not_found,
                          "source": sample.source}
    _predictions(report, run, baseline, training, (sample, base_sample))
    report.missing_features = _missing(run)
    report.null_features = _null_features(run, Path(baseline) if baseline is not None else None,
                                          training, report.warnings)
    return report


def write_data_report(report: DataReport, run_dir: str | Path) -> Path:
    from harness.rundir import write_json_atomic

    path = Path(run_dir) / "data.json"
    write_json_atomic(path, report.to_dict())
    return path


def _fmt_score(d: drift.DriftResult) -> str:
    if d.method == "none":
        return "-"
    if d.method in ("ks", "chi_squared"):
        return f"{d.method} p={d.score:.3g}"
    return f"{d.method} {d.score:.3f}"


def format_data_report(report: DataReport) -> list[str]:
    """The table ``harness data`` prints (one line per feature, then predictions)."""
    lines = [f"data checks: {report.run} against {report.baseline}"]
    if report.traffic:
        t = report.traffic
        lines.append(f"traffic: {t['rows']} input rows from "
                     + ", ".join(f"{m} {n}" for m, n in sorted(t["requests"].items()))
                     + " requests" + ("; store features joined by entity_id"
                                      if t["store_joined"] else "; request features only"))
    if report.features:
        lines.append(f"{'feature':<20} {'kind':<5} {'src':<7} {'n':>6} {'null%':>6} "
                     f"{'base%':>5} {'PSI':>6} {'test':<22} verdict")
        for f in report.features:
            problems = f.problems
            verdict = ("no verdict" if f.drift.drifted is None and not problems
                       else "; ".join(problems) or "ok")
            lines.append(f"{f.feature:<20} {f.kind[:4]:<5} {f.source[:7]:<7} "
                         f"{f.drift.n:>6} {100 * f.null_rate:>6.1f} "
                         f"{100 * f.reference_null_rate:>5.1f} {f.drift.psi:>6.3f} "
                         f"{_fmt_score(f.drift):<22} {verdict}")
        judged = sum(1 for f in report.features if f.drift.drifted is not None)
        state = {None: "no verdict", True: "YES", False: "no"}[report.dataset_drift]
        lines.append(f"dataset drift: {state} ({len(report.drifted)} of {judged} judged "
                     f"features drifted; threshold {int(100 * 0.5)} %)")
    if report.predictions:
        lines.append(f"{'predictions':<20} {'n':>6} {'n_eff':>6} {'base n':>7} {'mean':>6} "
                     f"{'base':>6} {'KL':>7} {'JS':>6} {'PSI':>6} verdict")
        for p in report.predictions:
            verdict = {None: "no verdict", True: "SHIFTED", False: "ok"}[p.shifted]
            n_eff = "-" if p.n_eff is None else f"{p.n_eff:.0f}"
            lines.append(f"{p.model + ' ' + p.version:<20} {p.n:>6} {n_eff:>6} {p.baseline_n:>7} "
                         f"{p.mean:>6.3f} {p.baseline_mean:>6.3f} {p.kl:>7.3f} {p.js:>6.3f} "
                         f"{p.psi:>6.3f} {verdict}")
    for model, feats in sorted(report.missing_features.items()):
        lines.append(f"missing features ({model}, per service metrics): "
                     + ", ".join(f"{k} {v:g} rows" for k, v in sorted(feats.items())))
    for nf in report.null_features:
        lines.append(f"null after assembly ({nf['model']}, per service metrics): "
                     f"{nf['feature']} {100 * nf['null_rate']:.1f} % of {nf['rows']} rows "
                     f"({nf['baseline']} {100 * nf['baseline_null_rate']:.1f} %)")
    if any(p.n_eff_source == "assumed" for p in report.predictions):
        lines.append("n_eff: the effective number of independent predictions (requests repeat "
                     "popular entities); this run recorded no traffic, so its entity "
                     "popularity is assumed as production-like traffic's (Zipf: ~30 "
                     "independent entities); --record-traffic measures it")
    lines += [f"! {w}" for w in report.warnings]
    return lines
