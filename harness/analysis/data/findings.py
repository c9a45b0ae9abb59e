"""Diagnosis findings from the data checks (``harness data``): the "input data" layer.

The rules of the ``data`` book are pure over a ``data.json`` document
(``DataReport.to_dict()``); ``findings_from_report`` runs them, ``data_findings`` reads or
computes that document for a run directory. Data findings explain no latency (score 0):
they answer "is it the input data?" beside the latency layers, e.g. a nulled upstream
feature that moved predictions while latency stayed fine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.analysis.rules import Finding, book, rule
from harness.analysis.rules.thresholds import PREDICTION_SHIFT_JS, PREDICTION_SHIFT_PSI

__all__ = ["BOOK", "data_findings", "findings_from_report"]

BOOK = book("data")
_TESTS = ("ks", "chi_squared")  # drift methods whose score is a p-value
Report = Mapping[str, Any]


def findings_from_report(report: Report) -> list[Finding]:
    """Every data finding of a data.json document, in the book's order."""
    return BOOK.run(report)


def _shift(p: Mapping[str, Any]) -> Finding:
    test = f"chi-squared p={p['p_value']:.2g}" if p.get("p_value") is not None \
        else f"JS {p['js']:.3f} >= 0.1"
    # A test on hundreds of predictions detects shifts too small to matter; a
    # warning needs a practical size too (PSI >= 0.1 "moderate", or JS >= 0.1).
    big = (p.get("psi") or 0.0) >= PREDICTION_SHIFT_PSI \
        or (p.get("js") or 0.0) >= PREDICTION_SHIFT_JS
    # Against the training holdout a shift may be the scenario's own choice (synthetic
    # inputs): information. Against a baseline run of the same scenario it is a change.
    vs_training = "training" in str(p.get("baseline", ""))
    return Finding(
        "warning" if big and not vs_training else "info", "input data",
        f"predictions of {p['model']} {p['version']} shifted from {p['baseline']}"
        + ("" if big else " (small: PSI and JS below 0.1)"),
        [f"{p['n']} predictions, mean {p['mean']:.3f} vs {p['baseline_mean']:.3f}; "
         f"{test}; KL {p['kl']:.3f} nats, PSI {p['psi']:.3f}"],
        ["look for nulled or renamed upstream features (missing features below, "
         "`harness data RUN`)", "compare the traffic's inputs with the baseline's"],
        0.0, {"prediction_shift": dict(p)})


@rule("data", "prediction_shift", layer="input data")
def prediction_shift(report: Report) -> list[Finding]:
    """Predictions shifted from the training holdout or the baseline run."""
    return [_shift(p) for p in report.get("predictions", []) if p.get("shifted")]


@rule("data", "null_features", layer="input data")
def null_features(report: Report) -> list[Finding]:
    """A feature that arrives null after assembly in more rows than in the baseline."""
    return [Finding(
        "warning", "input data",
        f"feature {f['feature']} of {f['model']} arrived null in "
        f"{100 * f['null_rate']:.1f} % of rows ({f['baseline']} "
        f"{100 * f['baseline_null_rate']:.1f} %)",
        [f"the service's *_null_features_total / *_feature_rows_total over the window: "
         f"{f['nulls']} of {f['rows']} rows (one-sided binomial p={f['p_value']:.2g})"],
        ["an upstream change nulls this column (schema change, failed join, broken "
         "pipeline): the model imputes it, so latency shows nothing; check the feature's "
         "producer"],
        0.0, {"null_features": dict(f)}) for f in report.get("null_features") or []]


@rule("data", "missing_features", layer="input data")
def missing_features(report: Report) -> list[Finding]:
    """Features the service counted as missing after assembly (a rename upstream)."""
    return [Finding(
        "warning", "input data",
        f"{model}: features missing after assembly: {', '.join(sorted(feats))}",
        ["refsvc_missing_features_total over the window: "
         + ", ".join(f"{k} {v:g} rows" for k, v in sorted(feats.items()))],
        ["an upstream rename or schema change: the model sees these as missing"],
        0.0, {"missing_features": {model: dict(feats)}})
        for model, feats in sorted((report.get("missing_features") or {}).items())]


@rule("data", "feature_problems", layer="input data")
def feature_problems(report: Report) -> list[Finding]:
    """Per feature of the traffic: a null rate above training's, and its other problems."""
    out = []
    for f in report.get("features", []):
        if f.get("null_increase"):
            out.append(Finding(
                "warning", "input data",
                f"feature {f['feature']} is null in {100 * f['null_rate']:.1f} % of rows "
                f"(training {100 * f['reference_null_rate']:.1f} %)",
                [f"{f['nulls']} nulls of {f['nulls'] + f['present']} rows ({f['source']})"],
                ["check the upstream pipeline that fills this feature"], 0.0,
                {"feature": f["feature"]}))
        other = [p for p in f.get("problems", []) if not p.startswith(("nulls", "drift"))]
        if other:
            out.append(Finding("info", "input data", f"feature {f['feature']}: "
                               + "; ".join(other), [], [], 0.0, {"feature": f["feature"]}))
    return out


def holm_drifted(features: list[Mapping[str, Any]], alpha: float = 0.05) -> list[str]:
    """The features whose drift survives Holm's step-down correction over every feature
    judged by a test (KS, chi-squared): with 19 features at 5 % each, a clean run has one
    "drifted" feature more often than not. Distance-judged features (large samples: JS /
    PSI thresholds, an effect size) keep their verdict."""
    tested = sorted(((float(f["drift"]["score"]), f["feature"]) for f in features
                     if f.get("drift", {}).get("method") in _TESTS
                     and f["drift"].get("drifted") is not None
                     and f["drift"].get("score") is not None), key=lambda t: t[0])
    kept = []
    for i, (p, name) in enumerate(tested):
        if p >= alpha / (len(tested) - i):
            break
        kept.append(name)
    by_distance = [f["feature"] for f in features if f.get("drift", {}).get("drifted")
                   and f["drift"].get("method") not in _TESTS]
    return [f["feature"] for f in features if f["feature"] in set(kept) | set(by_distance)]


@rule("data", "dataset_drift", layer="input data")
def dataset_drift(report: Report) -> Finding | None:
    """A dataset drift (enough features drifted), else the features whose drift survives
    a correction for testing many features at once."""
    drifted = [f["feature"] for f in report.get("features", [])
               if f.get("drift", {}).get("drifted")]
    base = report.get("baseline", "the baseline")
    if report.get("dataset_drift"):
        return Finding(
            "warning", "input data",
            f"dataset drift against {base}: {len(drifted)} of "
            f"{report.get('judged_features', 0)} features drifted",
            [", ".join(drifted)], ["compare the traffic's source with the training data"],
            0.0, {"drifted": drifted})
    named = holm_drifted(list(report.get("features", [])))
    if named:
        return Finding("info", "input data", f"drift in {', '.join(named)} against "
                       f"{base} (not a dataset drift)",
                       [f"each feature's test at 5 %, Holm's correction over the "
                        f"{report.get('judged_features', 0)} judged features"], [], 0.0,
                       {"drifted": named})
    return None


def data_findings(run_dir: str | Path, baseline_dir: str | Path | None = None
                  ) -> list[Finding]:
    """Findings for a run: its data.json when it matches, else computed (needs traffic/ or
    metrics/); [] when the run has neither."""
    run = Path(run_dir)
    if not (run / "traffic").exists() and not (run / "metrics" / "end.prom").exists():
        return []
    cached = run / "data.json"
    want = Path(baseline_dir).name if baseline_dir else "training reference"
    if cached.is_file():
        doc = json.loads(cached.read_text())
        if doc.get("baseline") == want:
            return findings_from_report(doc)
    from harness.analysis.data.report import check_run

    return findings_from_report(check_run(run, baseline_dir).to_dict())
