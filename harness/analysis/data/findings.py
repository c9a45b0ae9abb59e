"""Diagnosis findings from the data checks (``harness data``): the "input data" layer.

``findings_from_report`` is pure over a ``data.json`` document (``DataReport.to_dict()``);
``data_findings`` reads or computes that document for a run directory. Data findings
explain no latency (score 0): they answer "is it the input data?" beside the latency
layers, e.g. a nulled upstream feature that moved predictions while latency stayed fine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.analysis.diagnosis.facts import Finding

__all__ = ["findings_from_report", "data_findings"]


def findings_from_report(report: Mapping[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    base = report.get("baseline", "the baseline")
    for p in report.get("predictions", []):
        if p.get("shifted"):
            test = f"chi-squared p={p['p_value']:.2g}" if p.get("p_value") is not None \
                else f"JS {p['js']:.3f} >= 0.1"
            # A test on hundreds of predictions detects shifts too small to matter; a
            # warning needs a practical size too (PSI >= 0.1 "moderate", or JS >= 0.1).
            big = (p.get("psi") or 0.0) >= 0.1 or (p.get("js") or 0.0) >= 0.1
            # Against the training holdout a shift may be the scenario's own choice (synthetic
            # inputs): information. Against a baseline run of the same scenario it is a change.
            vs_training = "training" in str(p.get("baseline", ""))
            severity = "warning" if big and not vs_training else "info"
            out.append(Finding(
                severity, "input data",
                f"predictions of {p['model']} {p['version']} shifted from {p['baseline']}"
                + ("" if big else " (small: PSI and JS below 0.1)"),
                [f"{p['n']} predictions, mean {p['mean']:.3f} vs {p['baseline_mean']:.3f}; "
                 f"{test}; KL {p['kl']:.3f} nats, PSI {p['psi']:.3f}"],
                ["look for nulled or renamed upstream features (missing features below, "
                 "`harness data RUN`)", "compare the traffic's inputs with the baseline's"],
                0.0, {"prediction_shift": dict(p)}))
    for f in report.get("null_features") or []:
        out.append(Finding(
            "warning", "input data",
            f"feature {f['feature']} of {f['model']} arrived null in "
            f"{100 * f['null_rate']:.1f} % of rows ({f['baseline']} "
            f"{100 * f['baseline_null_rate']:.1f} %)",
            [f"refsvc_null_features_total / refsvc_feature_rows_total over the window: "
             f"{f['nulls']} of {f['rows']} rows (one-sided binomial p={f['p_value']:.2g})"],
            ["an upstream change nulls this column (schema change, failed join, broken "
             "pipeline): the model imputes it, so latency shows nothing; check the feature's "
             "producer"],
            0.0, {"null_features": dict(f)}))
    for model, feats in sorted((report.get("missing_features") or {}).items()):
        out.append(Finding(
            "warning", "input data",
            f"{model}: features missing after assembly: {', '.join(sorted(feats))}",
            ["refsvc_missing_features_total over the window: "
             + ", ".join(f"{k} {v:g} rows" for k, v in sorted(feats.items()))],
            ["an upstream rename or schema change: the model sees these as missing"],
            0.0, {"missing_features": {model: dict(feats)}}))
    drifted = []
    for f in report.get("features", []):
        if f.get("null_increase"):
            out.append(Finding(
                "warning", "input data",
                f"feature {f['feature']} is null in {100 * f['null_rate']:.1f} % of rows "
                f"(training {100 * f['reference_null_rate']:.1f} %)",
                [f"{f['nulls']} nulls of {f['nulls'] + f['present']} rows ({f['source']})"],
                ["check the upstream pipeline that fills this feature"], 0.0,
                {"feature": f["feature"]}))
        if f.get("drift", {}).get("drifted"):
            drifted.append(f["feature"])
        other = [p for p in f.get("problems", []) if not p.startswith(("nulls", "drift"))]
        if other:
            out.append(Finding("info", "input data", f"feature {f['feature']}: "
                               + "; ".join(other), [], [], 0.0, {"feature": f["feature"]}))
    if report.get("dataset_drift"):
        out.append(Finding(
            "warning", "input data",
            f"dataset drift against {base}: {len(drifted)} of "
            f"{report.get('judged_features', 0)} features drifted",
            [", ".join(drifted)], ["compare the traffic's source with the training data"],
            0.0, {"drifted": drifted}))
    elif drifted:
        out.append(Finding("info", "input data", f"drift in {', '.join(drifted)} against "
                           f"{base} (not a dataset drift)", [], [], 0.0, {"drifted": drifted}))
    return out


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
