"""The report's "Input data" section: the table of ``harness data`` from ``RUN/data.json``.

The report reads only the run directory: it shows what ``harness data RUN`` wrote and
says how to get it when the run has none (the checks need scipy and the training
reference, which a report built elsewhere may not have).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report.page import esc, table

__all__ = ["data_html"]


def _verdict(flag: bool | None, yes: str) -> str:
    return {None: "no verdict", True: yes, False: "ok"}[flag]


def _feature_rows(doc: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for f in doc.get("features", []):
        d = f.get("drift", {})
        test = "-" if d.get("method") in (None, "none") else \
            f"{d['method']} {'p=' if d['method'] in ('ks', 'chi_squared') else ''}{d['score']:.3g}"
        problems = "; ".join(f.get("problems", [])) or \
            ("no verdict" if d.get("drifted") is None else "ok")
        rows.append([f["feature"], f["kind"], f["source"], d.get("n", 0),
                     f"{100 * f['null_rate']:.1f}", f"{100 * f['reference_null_rate']:.1f}",
                     f"{d.get('psi', 0):.3f}", test, problems])
    return rows


def data_html(run_path: Path) -> str:
    """HTML of the section (a note when the run has no data.json)."""
    path = Path(run_path) / "data.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return ('<p class="note">No data checks for this run: run <code>harness data '
                f'{esc(Path(run_path).name)}</code> (needs the traffic recorded with '
                '<code>--record-traffic</code>) and rebuild the report.</p>')
    parts = [f'<p>Against {esc(doc.get("baseline"))}. Dataset drift: '
             f'{esc({None: "no verdict", True: "YES", False: "no"}[doc.get("dataset_drift")])} '
             f'({len(doc.get("drifted_features", []))} of {doc.get("judged_features", 0)} '
             'judged features drifted; threshold 50 %).</p>']
    if doc.get("features"):
        parts.append(table(["feature", "kind", "source", "n", "null %", "base null %", "PSI",
                            "test", "verdict"], _feature_rows(doc), left=3,
                           left_columns=(7, 8)))
    preds = doc.get("predictions", [])
    if preds:
        parts.append(table(["model", "version", "n", "base n", "mean", "base mean", "KL",
                            "JS", "PSI", "verdict"],
                           [[p["model"], p["version"], p["n"], p["baseline_n"],
                             f"{p['mean']:.3f}", f"{p['baseline_mean']:.3f}", f"{p['kl']:.3f}",
                             f"{p['js']:.3f}", f"{p['psi']:.3f}",
                             _verdict(p.get("shifted"), "SHIFTED")] for p in preds],
                           left=2, left_columns=(9,)))
    for model, feats in sorted((doc.get("missing_features") or {}).items()):
        parts.append(f'<p class="note">Missing features ({esc(model)}, per service metrics): '
                     + esc(", ".join(f"{k} {v:g} rows" for k, v in sorted(feats.items())))
                     + "</p>")
    for f in doc.get("null_features") or []:
        parts.append(f'<p class="note">Null after assembly ({esc(f["model"])}, per service '
                     f'metrics): {esc(f["feature"])} {100 * f["null_rate"]:.1f} % of '
                     f'{f["rows"]} rows ({esc(f["baseline"])} '
                     f'{100 * f["baseline_null_rate"]:.1f} %)</p>')
    parts += [f'<p class="note">{esc(w)}</p>' for w in doc.get("warnings", [])]
    return "\n".join(parts)
