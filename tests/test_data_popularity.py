"""Entity popularity in the data checks (issue 18, item 6): production-like traffic repeats
popular entities, so its predictions are worth fewer independent observations than there
are requests; a clean run must not read as a prediction shift, a real shift must."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as sps

from harness.analysis.data.checks import prediction_shift
from harness.analysis.data.inputs import TrafficSample
from harness.analysis.data.popularity import (
    collision_probability,
    design_effect,
    effective_n,
    effective_n_for,
    model_collision,
    model_keys,
    overlap,
    rao_scott_p,
)
from harness.analysis.rules.thresholds import POPULARITY_COLLISION


def test_effective_n_is_kish_by_hand():
    assert effective_n([1, 1, 2]) == pytest.approx(9 / 5)  # (2 + 1)^2 / (4 + 1)
    assert effective_n(range(7)) == 7.0
    assert effective_n(["a"] * 50) == 1.0
    with pytest.raises(ValueError, match="at least one id"):
        effective_n([])


def test_collision_probability_and_the_effective_size_it_gives():
    assert collision_probability([1, 1, 2]) == pytest.approx(1 / 3)  # 2*1 / (3*2)
    assert collision_probability([1, 2, 3]) == 0.0
    assert collision_probability([5]) is None
    assert effective_n_for(1001, 0.01) == pytest.approx(91.0)  # 1001 / (1 + 1000 * 0.01)
    assert effective_n_for(100, 0.0) == 100.0 and effective_n_for(1, 0.5) == 1.0
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        effective_n_for(10, 1.5)
    # Zipf 1.1 over 20,000 entities: the chance two requests collide is ~0.032 (the
    # assumed default's basis), so n_eff stays near 31 however many requests
    w = 1.0 / np.arange(1, 20_001) ** 1.1
    w /= w.sum()
    assert float((w ** 2).sum()) == pytest.approx(0.0316, abs=0.0005)
    assert 0.027 <= POPULARITY_COLLISION <= 0.037
    assert effective_n_for(10_000, float((w ** 2).sum())) == pytest.approx(31.6, abs=0.3)


def test_design_effect_and_the_rao_scott_correction():
    assert design_effect(100, 25) == 4.0
    assert design_effect(100, None) == 1.0 and design_effect(10, 50) == 1.0
    a, b = [60, 40], [500, 500]
    plain = sps.chi2_contingency(np.array([a, b]), correction=False)
    assert rao_scott_p(a, b) == pytest.approx(float(plain.pvalue))
    assert rao_scott_p(a, b, 4.0) == pytest.approx(
        float(sps.chi2.sf(plain.statistic / 4.0, plain.dof)))
    assert rao_scott_p([5, 0], [7, 0], 3.0) == 1.0  # one bin: nothing to compare
    with pytest.raises(ValueError, match="design effect must be >= 1"):
        rao_scott_p(a, b, 0.5)


def test_keys_collisions_and_overlap_of_recorded_traffic():
    s = TrafficSample(entity_ids=[1, 1, 2, 7], models=["churn", "churn", "churn", "ranking"],
                      item_ids=[[], [], [], [3, 4]])
    assert model_keys(s, "churn") == [1, 1, 2]
    assert model_keys(s, "ranking") == [(7, 3), (7, 4)]
    assert model_collision(s, "churn") == pytest.approx(1 / 3)
    assert overlap([1, 1, 2], [1, 2, 2]) == pytest.approx(2 / 3)
    assert overlap([1, 2], [3, 4]) == 0.0 and overlap([], [1]) == 0.0


def _clean_and_shifted_runs(n: int, shift: float, runs: int = 40) -> tuple[int, int, int]:
    """Simulated runs of n requests over Zipf(1.1)-popular entities of a model whose
    prediction is fixed per entity, against the entity-level holdout: how many a naive test,
    the traffic's own n_eff and the assumed n_eff call shifted."""
    rng = np.random.default_rng(7)
    pred = rng.beta(2, 12, 20_000)
    edges = np.linspace(0, 1, 21)
    hold = np.histogram(pred, edges)[0]
    w = 1.0 / np.arange(1, 20_001) ** 1.1
    w /= w.sum()
    naive = measured = assumed = 0
    for s in range(runs):
        r = np.random.default_rng(100 + s)
        ids = r.permutation(20_000)[r.choice(20_000, n, p=w)]  # the seed's hot set
        counts = np.histogram(np.clip(pred[ids] + shift, 0, 0.999), edges)[0]
        q = collision_probability(list(ids))
        assert q is not None
        naive += bool(prediction_shift("m", "v1", edges, counts, hold).shifted)
        measured += bool(prediction_shift("m", "v1", edges, counts, hold,
                                          n_eff=(effective_n_for(n, q), "traffic")).shifted)
        assumed += bool(prediction_shift("m", "v1", edges, counts, hold, n_eff=(
            effective_n_for(n, POPULARITY_COLLISION), "assumed")).shifted)
    return naive, measured, assumed


def test_clean_zipf_traffic_is_no_prediction_shift_and_a_real_shift_is():
    # make demo's case: 252 churn predictions, PSI 0.208 "shifted" from the holdout
    naive, measured, assumed = _clean_and_shifted_runs(250, 0.0)
    assert naive >= 36 and measured <= 2 and assumed <= 2  # of 40 (a 5 % test: ~2)
    # every prediction 0.1 higher (a nulled upstream feature's kind of shift): still caught
    naive, measured, assumed = _clean_and_shifted_runs(250, 0.1)
    assert measured >= 39 and assumed >= 39


def test_the_shift_record_says_its_effective_size():
    edges = [0.0, 0.5, 1.0]
    p = prediction_shift("m", "v1", edges, [130, 120], [600, 400], n_eff=(30.0, "assumed"))
    assert p.shifted is False and p.n_eff == 30.0 and p.n_eff_source == "assumed"
    assert p.to_dict()["n_eff"] == 30.0 and p.to_dict()["n_eff_source"] == "assumed"
    plain = prediction_shift("m", "v1", edges, [130, 120], [600, 400])
    assert plain.shifted is True and plain.n_eff is None  # 250 independent: p < 0.05


def test_one_drifted_feature_of_many_is_named_only_past_holms_correction():
    from harness.analysis.data.findings import dataset_drift, holm_drifted

    def feat(name: str, p: float, method: str = "ks") -> dict:
        return {"feature": name, "drift": {"method": method, "score": p, "drifted": p < 0.05}}

    # the clean production run: sessions_7d at p = 0.028 among 19 judged features
    feats = [feat("sessions_7d", 0.028)] + [feat(f"f{i}", 0.3 + i / 40) for i in range(18)]
    assert holm_drifted(feats) == []  # 0.028 >= 0.05 / 19
    assert dataset_drift({"features": feats, "judged_features": 19}) is None
    feats[3] = feat("f2", 0.001)  # 0.001 < 0.05 / 19 = 0.0026; then 0.028 >= 0.05 / 18
    assert holm_drifted(feats) == ["f2"]
    feats.append({"feature": "big", "drift": {"method": "js", "score": 0.2, "drifted": True}})
    assert holm_drifted(feats) == ["f2", "big"]  # an effect size keeps its verdict
    found = dataset_drift({"features": feats, "judged_features": 20})
    assert found is not None and found.title == ("drift in f2, big against the baseline "
                                                 "(not a dataset drift)")
