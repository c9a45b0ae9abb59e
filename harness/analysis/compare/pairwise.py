"""Compare two runs, or two request names of one run (``harness compare``).

Per request name, metric/stage and percentile: A, B, B - A and a distribution-free
confidence interval of the difference (harness/stats/compare.py), with a verdict
for B relative to A: faster, slower, no significant difference, insufficient data.

Two runs are only comparable when they ran on the same kind of machine with the
same scenario and load settings (pyperf refuses otherwise); what differs is listed
in ``problems``, and the command refuses unless forced. Differences in what is
being compared (model versions, faults, service options) are listed in ``notes``.
The fairest comparison runs both versions side by side in one run with requests
interleaved (examples/compare_versions.py): then ``name_a``/``name_b`` pick them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.analysis.slo import Slo, SloResult, check, request_names, resolve_name, retarget
from harness.rundir import RunDir
from harness.rundir.records import SeriesEntry
from harness.stats.compare import quantile_diff, verdict_for
from harness.units import fmt_ms

__all__ = ["DEFAULT_PERCENTILES", "CompareRow", "Comparison", "comparability", "compare",
           "format_comparison"]

DEFAULT_PERCENTILES: tuple[float, ...] = (50, 90, 99, 99.9)
_ENV_KEYS = (("hostname", "host"), ("cpu_model", "CPU model"), ("cpu_logical", "CPU count"))
_LOAD_KEYS = ("model", "users", "spawn_rate", "rate", "arrival", "workers")


@dataclass(frozen=True)
class CompareRow:
    """One percentile of one series in both sides; µs; diff and CI are B - A."""

    name: str
    metric: str
    stage: str | None
    percentile: float
    a_us: int | None
    b_us: int | None
    diff_us: int | None
    diff_pct: float | None
    ci_low_us: int | None
    ci_high_us: int | None
    a_n: int
    b_n: int
    verdict: str


@dataclass
class Comparison:
    """The result of ``compare``; ``comparable`` is False when ``problems`` is not empty."""

    a_id: str
    b_id: str
    mode: str  # "runs" (two runs) or "names" (two request names of one run)
    confidence: float
    rows: list[CompareRow]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    slo_a: SloResult | None = None
    slo_b: SloResult | None = None
    min_effect_pct: float = 0.0

    @property
    def comparable(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a_id, "b": self.b_id, "mode": self.mode,
                "confidence": self.confidence, "min_effect_pct": self.min_effect_pct,
                "method": "order-statistic intervals of each side at (1+c)/2, combined "
                          "(Bonferroni); B - A",
                "comparable": self.comparable, "problems": list(self.problems),
                "notes": list(self.notes), "rows": [asdict(r) for r in self.rows],
                "slo_a": self.slo_a.to_dict() if self.slo_a else None,
                "slo_b": self.slo_b.to_dict() if self.slo_b else None}


def _differs(label: str, a: Any, b: Any) -> str | None:
    return None if a == b else f"{label} differs: A {a!r}, B {b!r}"


def comparability(a: RunDir, b: RunDir) -> tuple[list[str], list[str]]:
    """(problems, notes): what makes two runs incomparable, and what they intentionally vary."""
    problems: list[str] = []
    env_a, env_b = a.meta.get("environment") or {}, b.meta.get("environment") or {}
    for key, label in _ENV_KEYS:
        found = _differs(label, env_a.get(key), env_b.get(key))
        if found:
            problems.append(found)
    sa, sb = a.meta.get("scenario") or {}, b.meta.get("scenario") or {}
    if sa.get("sha256") != sb.get("sha256"):
        problems.append(f"scenario differs: A {sa.get('path')!r}, B {sb.get('path')!r} "
                        "(locustfile content differs)")
    la, lb = a.meta.get("load") or {}, b.meta.get("load") or {}
    for key in _LOAD_KEYS:
        found = _differs(f"load setting {key}", la.get(key), lb.get(key))
        if found:
            problems.append(found)
    notes = []
    for key in ("duration_s", "warmup_s"):
        found = _differs(f"load setting {key}", la.get(key), lb.get(key))
        if found:
            notes.append(found + " (sample counts differ; intervals account for it)")
    # --tag labels say what a run was meant to vary (workers=1 vs workers=2)
    tags_a, tags_b = la.get("tags") or {}, lb.get("tags") or {}
    for key in sorted(set(tags_a) | set(tags_b)):
        notes.append(_differs(f"tag {key}", tags_a.get(key), tags_b.get(key)) or "")
    ta, tb = a.meta.get("target") or {}, b.meta.get("target") or {}
    oa, ob = ta.get("service_options") or {}, tb.get("service_options") or {}
    for key in sorted(set(oa) | set(ob)):
        notes.append(_differs(f"service option {key}", oa.get(key), ob.get(key)) or "")
    if not (ta.get("served_by_harness") and tb.get("served_by_harness")):
        notes.append(_differs("target", ta.get("url"), tb.get("url")) or "")
    # run.json keeps them as target.models (older runs: model_versions)
    va = ta.get("models", ta.get("model_versions"))
    vb = tb.get("models", tb.get("model_versions"))
    if isinstance(va, dict) and isinstance(vb, dict):
        for name in sorted(set(va) | set(vb)):
            notes.append(_differs(f"model {name}", va.get(name), vb.get(name)) or "")
    elif va != vb and (va or vb):
        notes.append(f"model versions differ: A {va!r}, B {vb!r}")
    return problems, [n for n in notes if n]


def _stages(run: RunDir, name: str) -> set[str]:
    return {s.stage for s in map(SeriesEntry.from_dict, run.series()) if s.metric == "stage"
            and s.name == name and s.tag is None and s.stage}


def _series_pairs(a: RunDir, b: RunDir, name_a: str | None, name_b: str | None
                  ) -> list[tuple[str, str, str]]:
    if name_a is not None or name_b is not None:
        if name_a is None or name_b is None:
            raise ValueError(f"give both name_a and name_b (got {name_a!r}, {name_b!r})")
        ra, rb = resolve_name(a, name_a), resolve_name(b, name_b)
        for run, given, got in ((a, name_a, ra), (b, name_b, rb)):
            if got not in request_names(run):
                raise ValueError(f"request name {given!r} is not in run {run.path.name} "
                                 f"(names: {request_names(run)})")
        return [(ra, rb, f"{ra} vs {rb}" if ra != rb else ra)]
    common = sorted(set(request_names(a)) & set(request_names(b)))
    pairs = [(n, n, n) for n in common]
    if len(common) != 1:
        pairs.append(("*", "*", "*"))
    return pairs


def compare(a: RunDir, b: RunDir, slo: Slo | None = None, confidence: float = 0.95, *,
            name_a: str | None = None, name_b: str | None = None,
            percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
            min_effect_pct: float = 0.0) -> Comparison:
    """Compare B against A (two runs, or two request names of one run when a is b's path)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence!r})")
    same = a.path.resolve() == b.path.resolve()
    if same and (name_a is None or name_b is None):
        raise ValueError("comparing a run with itself needs two request names "
                         "(--name-a and --name-b)")
    problems, notes = ([], []) if same else comparability(a, b)
    rows: list[CompareRow] = []
    for na, nb, label in _series_pairs(a, b, name_a, name_b):
        series: list[tuple[str, str | None]] = [("client", None)]
        series += [("stage", s) for s in sorted(_stages(a, na) & _stages(b, nb))]
        series.append(("residual", None))
        for metric, stage in series:
            ha = a.histogram(metric, na, stage=stage)
            hb = b.histogram(metric, nb, stage=stage)
            if ha.get_total_count() == 0 and hb.get_total_count() == 0:
                continue
            for p in percentiles:
                d = quantile_diff(ha, hb, p, confidence)
                rows.append(CompareRow(
                    label, metric, stage, float(p), d.a_us, d.b_us, d.diff_us,
                    None if d.diff_pct is None else round(d.diff_pct, 3),
                    d.ci_low_us, d.ci_high_us, d.a_n, d.b_n, verdict_for(d, min_effect_pct)))
    slo_a = slo_b = None
    if slo is not None:
        slo_a = check(a, retarget(slo, name_a) if same and name_a else slo)
        slo_b = check(b, retarget(slo, name_b) if same and name_b else slo)
    return Comparison(
        a_id=str(a.meta.get("run_id") or a.path.name) + (f" [{name_a}]" if name_a else ""),
        b_id=str(b.meta.get("run_id") or b.path.name) + (f" [{name_b}]" if name_b else ""),
        mode="names" if same else "runs", confidence=confidence, rows=rows,
        problems=problems, notes=[n for n in notes if n], slo_a=slo_a, slo_b=slo_b,
        min_effect_pct=min_effect_pct)


def format_comparison(c: Comparison) -> list[str]:
    """A table of the rows, the SLO verdicts and, loudly, why the runs may not be comparable."""
    lines = [f"A: {c.a_id}", f"B: {c.b_id}",
             f"B - A, {c.confidence:.0%} distribution-free intervals (times in ms)", ""]
    if c.problems:
        lines += ["!! THE RUNS ARE NOT COMPARABLE:"] + [f"!!   {p}" for p in c.problems] + [""]
    named = c.mode == "runs"  # with two names of one run, A and B above say which
    head = ((f"{'request':<30} " if named else "")
            + f"{'series':<14} {'pct':>6} {'A':>10} {'B':>10} {'B-A':>10} {'B-A %':>8} "
            f"{'CI low':>10} {'CI high':>10}  verdict")
    lines.append(head)
    for r in c.rows:
        series = r.stage if r.metric == "stage" and r.stage else r.metric
        pct = f"{r.diff_pct:+.1f}" if r.diff_pct is not None else "-"
        lines.append((f"{r.name[:30]:<30} " if named else "")
                     + f"{series[:14]:<14} {f'p{r.percentile:g}':>6} {fmt_ms(r.a_us):>10} "
                     f"{fmt_ms(r.b_us):>10} {fmt_ms(r.diff_us, signed=True):>10} "
                     f"{pct:>8} {fmt_ms(r.ci_low_us, signed=True):>10} "
                     f"{fmt_ms(r.ci_high_us, signed=True):>10}  "
                     f"{r.verdict}")
    if c.min_effect_pct:
        lines.append(f"(differences under {c.min_effect_pct:g} % of A count as no significant "
                     "difference)")
    if c.notes:
        lines += ["", "what differs between the runs (intended?):"] + [f"  {n}" for n in c.notes]
    if c.slo_a is not None and c.slo_b is not None:
        lines += ["", f"SLO {c.slo_a.source or ''}: A {c.slo_a.verdict.upper()}, "
                      f"B {c.slo_b.verdict.upper()}"]
        for side, res in (("A", c.slo_a), ("B", c.slo_b)):
            for row in res.rows:
                if row.verdict != "pass":
                    lines.append(f"  {side} {row.objective}: {row.verdict} ({row.detail})")
    return lines
