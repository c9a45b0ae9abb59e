"""The traffic model against the training data, the OOD classes against the same measures,
and the load shapes by value. Pure: no Locust, no service.

Reference samples come from the training data generator itself
(reference_service/data.py, a fresh seed): an independent sample of the distribution the
models were trained on, which the traffic model only knows through reference_stats.json.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.load.shapes import parse_duration, parse_shape
from reference_service import data
from scenarios.ood_classes import CLASSES, make_ood, overridable, pick_class
from scenarios.traffic import TrafficModel, TrafficModelError, Zipf, request_name

N = 3000  # samples per feature: "a few thousand"
ALPHA = 0.05  # the usual level, family-wise over the features tested (Bonferroni)


@pytest.fixture(scope="module")
def model(artifacts_dir: Path) -> TrafficModel:
    return TrafficModel.from_artifacts(artifacts_dir, seed=7)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2024)
    users = data.make_users(30000, rng)
    items = data.make_items(20000, rng)
    _, req, _ = data.make_transactions(users, 30000, rng)
    return {**users, **items, **req}


def _numeric(model: TrafficModel) -> list[str]:
    return sorted(f for f, s in model.schema.items() if s["kind"] == "numeric")


def test_sampled_numeric_features_match_training_by_ks(model, reference):
    names = _numeric(model)
    level = ALPHA / len(names)
    rng = random.Random(11)
    results = {}
    for name in names:
        sample = np.array([model.draw_feature(name, rng) for _ in range(N)])
        ref = reference[name][~np.isnan(reference[name])]
        results[name] = stats.ks_2samp(sample, ref)
    rejected = {n: (round(r.statistic, 4), r.pvalue) for n, r in results.items()
                if r.pvalue < level}
    assert not rejected, f"KS rejects at {level:.4f} (D, p): {rejected}"


def test_production_requests_carry_training_distributed_request_features(model, reference):
    """Through the request stream (not the sampler directly): the fraud requests' amount."""
    stream = model.stream(0)
    amounts = []
    while len(amounts) < N:
        req = stream.next("fraud")
        amounts += [inst["features"]["amount"] for inst in req.body["instances"]]
    assert stats.ks_2samp(amounts, reference["amount"]).pvalue > ALPHA


def test_categorical_features_match_training_frequencies(model, artifacts_dir):
    freqs = json.loads((artifacts_dir / "reference_stats.json").read_text())["features"]
    rng = random.Random(5)
    cats = sorted(f for f, s in model.schema.items() if s["kind"] == "categorical")
    for name in cats:
        want = freqs[name]["frequencies"]
        got = Counter(model.draw_feature(name, rng) for _ in range(N))
        assert set(got) <= set(want), name
        observed = [got.get(c, 0) for c in want]
        expected = [N * p for p in want.values()]
        assert stats.chisquare(observed, expected).pvalue > ALPHA / len(cats), name


def test_entity_popularity_follows_the_configured_zipf_exponent():
    for s in (0.8, 1.2):
        z = Zipf(100_000, s, seed=1)
        rng = random.Random(3)
        n = 40_000
        counts = Counter(z.draw(rng) for _ in range(n))
        # top ranks: each count within 4 binomial standard deviations of n * P(rank)
        for rank in range(1, 6):
            p = z.probability(rank)
            got = counts[z.ids[rank - 1]]
            assert abs(got - n * p) < 4 * math.sqrt(n * p * (1 - p)), (s, rank, got, n * p)
        # rank-frequency slope on log-log over ranks 1..30 recovers the exponent
        ranks = np.arange(1, 31)
        freq = np.array([counts[z.ids[r - 1]] for r in ranks], dtype=float)
        slope = np.polyfit(np.log(ranks), np.log(freq), 1)[0]
        assert abs(-slope - s) < 0.12, (s, slope)


def test_hot_entities_are_shared_by_users_and_spread_over_the_id_range(model):
    top = [model.entities.ids[i] for i in range(5)]
    assert max(top) - min(top) > 1000  # a seeded permutation, not ids 0..4
    hot = set(model.entities.ids[:100])
    for user in (0, 1):
        stream = model.stream(user)
        hits = sum(stream.next("churn").body["instances"][0]["entity_id"] in hot
                   for _ in range(500))
        share = sum(model.entities.probability(r) for r in range(1, 101))
        assert abs(hits - 500 * share) < 4 * math.sqrt(500 * share * (1 - share)), user


def test_same_seed_same_sequence_distinct_users_distinct_sequences(artifacts_dir, model):
    again = TrafficModel.from_artifacts(artifacts_dir, seed=7)
    first = [model.stream(3, 1).next().body for _ in range(50)]
    second = [again.stream(3, 1).next().body for _ in range(50)]
    assert first == second
    other = [model.stream(4, 1).next().body for _ in range(50)]
    assert other != first
    reseeded = TrafficModel.from_artifacts(artifacts_dir, seed=8)
    assert [reseeded.stream(3, 1).next().body for _ in range(50)] != first


def test_model_mix_and_batches(model):
    stream = model.stream(9)
    reqs = [stream.next() for _ in range(4000)]
    counts = Counter(r.model for r in reqs)
    for name, p in model.mix_weights.items():
        assert abs(counts[name] - 4000 * p) < 4 * math.sqrt(4000 * p * (1 - p)), name
    sizes = [r.batch for r in reqs if r.model != "ranking"]
    assert 0.7 < sizes.count(1) / len(sizes) < 0.9
    assert max(sizes) <= model.max_batch
    rank = [r for r in reqs if r.model == "ranking"]
    assert all(r.batch == 1 and 1 <= len(r.body["instances"][0]["item_ids"]) <= 100
               for r in rank)
    assert {r.name for r in reqs} == {f"predict {m}" for m in model.models}


def test_traffic_model_rejects_bad_settings(artifacts_dir, tmp_path):
    with pytest.raises(TrafficModelError, match="unknown models"):
        TrafficModel.from_artifacts(artifacts_dir, mix={"nope": 1.0})
    with pytest.raises(TrafficModelError, match="fraud=v9"):
        TrafficModel.from_artifacts(artifacts_dir, versions={"fraud": "v9"})
    with pytest.raises(TrafficModelError, match="zipf exponent must be > 0"):
        TrafficModel.from_artifacts(artifacts_dir, zipf_s=0)
    with pytest.raises(TrafficModelError, match="artifacts not readable"):
        TrafficModel.from_artifacts(tmp_path)


def test_request_names_are_low_cardinality():
    assert request_name("/v1/models/fraud/predict") == "predict fraud"
    assert request_name("/v1/models/fraud/versions/v2/predict?x=1") == "predict fraud v2"
    assert request_name("/users/123/orders/9f86d081884c7d659a2feaa0c55ad015") == \
        "/users/:id/orders/:id"


# -- OOD classes: out of distribution by the same measures --------------------------------
def _measures(model: TrafficModel, reqs: list) -> dict[str, float]:
    """The measures a drift check applies to one set of requests."""
    insts = [(r.model, i) for r in reqs for i in r.body["instances"]]
    out = {"max_batch": max(r.batch for r in reqs),
           "max_features": max(len(i.get("features", {})) for _, i in insts),
           "unknown_entity_share": np.mean([i["entity_id"] >= model.entities.n
                                            for _, i in insts])}
    nulls = [v is None for _, i in insts for v in i.get("features", {}).values()]
    out["null_share"] = float(np.mean(nulls)) if nulls else 0.0
    cats = [(f, v) for _, i in insts for f, v in i.get("features", {}).items()
            if model.schema.get(f, {}).get("kind") == "categorical" and v is not None]
    out["unseen_category_share"] = float(np.mean(
        [v not in model.schema[f]["categories"] for f, v in cats])) if cats else 0.0
    stats_ = model.stats["features"]
    worst = 1.0
    for f in _numeric(model):
        vals = [i["features"][f] for _, i in insts
                if isinstance(i.get("features", {}).get(f), int | float)]
        if len(vals) >= 200:
            ref = model.samplers[f].sample(2000, random.Random(f))
            worst = min(worst, stats.ks_2samp(vals, ref).pvalue)
        out[f"{f}_outside_range"] = float(np.mean(
            [not stats_[f]["min"] <= v <= stats_[f]["max"] for v in vals])) if vals else 0.0
    out["min_ks_p"] = worst
    return out


def _in_distribution(m: dict[str, float], max_batch: int) -> dict[str, bool]:
    outside = max(v for k, v in m.items() if k.endswith("_outside_range"))
    verdict = {"batch": m["max_batch"] <= max_batch, "width": m["max_features"] <= 20,
               "entities": m["unknown_entity_share"] == 0, "nulls": m["null_share"] == 0,
               "categories": m["unseen_category_share"] == 0,
               "ks": m["min_ks_p"] > 1e-3, "range": outside == 0}
    return {k: bool(v) for k, v in verdict.items()}


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_each_ood_class_is_out_of_distribution_by_the_same_measures(model, cls):
    n = 60 if cls in ("oversized_batch", "high_dimensional") else 600
    prod = [make_ood("production", model.stream(0)) for _ in range(600)]
    assert all(_in_distribution(_measures(model, prod), model.max_batch).values())
    stream = model.stream(1)
    ood = [make_ood(cls, stream) for _ in range(n)]
    verdict = _in_distribution(_measures(model, ood), model.max_batch)
    breaks = {"covariate_shift": "ks", "null_features": "nulls", "extreme_values": "range",
              "unseen_categories": "categories", "oversized_batch": "batch",
              "high_dimensional": "width", "unknown_entities": "entities"}[cls]
    assert verdict[breaks] is False, (cls, verdict)


def test_ood_null_features_only_nulls_what_the_schema_allows(model):
    req = make_ood("null_features", model.stream(2))
    for inst in req.body["instances"]:
        for f in overridable(model, req.model):
            if f in inst.get("features", {}) and inst["features"][f] is None:
                assert model.schema[f]["nullable"]


def test_class_shares_mix_as_configured():
    rng = random.Random(1)
    picks = Counter(pick_class(rng, [("covariate_shift", 0.25), ("null_features", 0.5)])
                    for _ in range(8000))
    for name, p in (("covariate_shift", 0.25), ("null_features", 0.5), ("production", 0.25)):
        assert abs(picks[name] - 8000 * p) < 4 * math.sqrt(8000 * p * (1 - p))
    with pytest.raises(ValueError, match="OOD class must be one of"):
        make_ood("nope", None)  # type: ignore[arg-type]


# -- shapes, by value -----------------------------------------------------------------------
def test_shapes_by_value():
    s = parse_shape("step:start=2,step=3,every=10s,steps=3")
    assert [s.rate_at(t) for t in (0, 9.99, 10, 25, 29.9, 30)] == [2, 2, 5, 8, 8, 0]
    assert s.duration_s == 30 and s.peak == 8
    r = parse_shape("ramp:from=10,to=30,over=20s,hold=5s")
    assert [r.rate_at(t) for t in (0, 5, 10, 20, 24)] == [10, 15, 20, 30, 30]
    assert r.rate_at(25) == 0 and r.duration_s == 25
    sp = parse_shape("spike:base=5,peak=40,at=10,width=2,duration=20")
    assert [sp.rate_at(t) for t in (9.9, 10, 11.9, 12)] == [5, 40, 40, 5]
    d = parse_shape("diurnal:low=2,high=10,period=60s,cycles=2")
    assert d.rate_at(0) == pytest.approx(2) and d.rate_at(30) == pytest.approx(10)
    assert d.rate_at(15) == pytest.approx(6) and d.rate_at(60) == pytest.approx(2)
    assert d.duration_s == 120
    soak = parse_shape("soak:level=7,duration=1h")
    assert soak.rate_at(1800) == 7 and soak.duration_s == 3600
    assert parse_shape("ramp:from=1,to=2,over=10").users_at(5) == 2  # 1.5 rounds to even 2
    assert parse_shape("step").rate_at(15) == 2  # step defaults to start


@pytest.mark.parametrize("spec, message", [
    ("wave", "shape kind must be one of"),
    ("ramp:to", "takes"),
    ("ramp:slope=3", "takes"),
    ("ramp:to=x", "to must be a number"),
    ("ramp:over=0", "over must be > 0"),
    ("spike:peak=-1", "peak must be >= 0"),
    ("step:steps=2.5", "whole number"),
])
def test_bad_shapes_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_shape(spec)


def test_durations():
    assert parse_duration("90") == 90 and parse_duration("1.5m") == 90
    assert parse_duration("2h") == 7200 and parse_duration(3) == 3
    with pytest.raises(ValueError, match="duration must look like"):
        parse_duration("3 days")
