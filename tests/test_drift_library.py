"""KL divergence and Jensen-Shannon distance through scipy (``scipy.stats.entropy``,
``scipy.spatial.distance.jensenshannon``), checked by value against the hand-written
implementation they replaced (kept here as the reference) and against analytic values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.stats import drift


def reference_kl(p_counts: list[float], q_counts: list[float], pseudocount: float = 0.5) -> float:
    """The implementation before scipy (harness/stats/drift.py at 008899b)."""
    p = np.asarray(p_counts, dtype=float) + pseudocount
    q = np.asarray(q_counts, dtype=float) + pseudocount
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    if np.any(q[mask] == 0):
        return math.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def reference_js(p_counts: list[float], q_counts: list[float]) -> float:
    p, q = np.asarray(p_counts, dtype=float), np.asarray(q_counts, dtype=float)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max(0.0, (kl_p + kl_q) / 2)))


counts = st.lists(st.integers(0, 10_000), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_kl_and_js_equal_the_previous_implementation(data: st.DataObject) -> None:
    p = data.draw(counts)
    q = data.draw(st.lists(st.integers(0, 10_000), min_size=len(p), max_size=len(p)))
    for pseudocount in (0.5, 1.0):
        assert drift.kl_divergence(p, q, pseudocount) == pytest.approx(
            reference_kl(p, q, pseudocount), rel=1e-12, abs=1e-15)
    # the square root near 0 turns a 1e-17 rounding into ~1e-9: absolute tolerance there
    assert drift.js_distance(p, q) == pytest.approx(reference_js(p, q), rel=1e-9, abs=1e-7)


def test_values_by_hand_and_edge_cases() -> None:
    # no smoothing and disjoint support: infinite, as before
    assert drift.kl_divergence([1, 0], [0, 1], pseudocount=0.0) == math.inf
    assert reference_kl([1, 0], [0, 1], 0.0) == math.inf
    # P = (1.5/2, 0.5/2), Q the reverse: KL = 0.5 ln 3 (the value test_datachecks pins)
    assert drift.kl_divergence([1, 0], [0, 1]) == pytest.approx(0.5 * math.log(3), rel=1e-12)
    # disjoint supports: the largest JS distance, sqrt(ln 2)
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(math.sqrt(math.log(2)))
    # identical inputs whose divergence rounds below zero give 0, not NaN
    assert drift.js_distance([1, 2, 3], [2, 4, 6]) == 0.0
    assert drift.js_distance([0, 0], [1, 1]) == 0.0
    with pytest.raises(ValueError, match="same bins"):
        drift.js_distance([1], [1, 2])
    with pytest.raises(ValueError, match="pseudocount must be >= 0"):
        drift.kl_divergence([1, 1], [1, 1], pseudocount=-1.0)
