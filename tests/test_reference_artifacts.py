"""Training output, the sha256 manifest check, and deterministic training."""

from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from reference_service.artifacts import ArtifactError, load_manifest, sha256_file
from reference_service.train import build


def test_manifest_lists_every_artifact_with_its_sha256(artifacts_dir: Path):
    manifest = load_manifest(artifacts_dir)
    for name, entry in manifest["artifacts"].items():
        assert sha256_file(artifacts_dir / name) == entry["sha256"], name
    versions = {(m, v) for m, e in manifest["models"].items() for v in e["versions"]}
    assert versions == {("fraud", "v1"), ("fraud", "v2"), ("churn", "v1"), ("ranking", "v1")}
    fraud = manifest["models"]["fraud"]["versions"]
    assert fraud["v2"]["metrics"]["holdout_auc"] > fraud["v1"]["metrics"]["holdout_auc"]
    conn = sqlite3.connect(artifacts_dir / manifest["store"]["sqlite"])
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] >= 100_000
    assert conn.execute("EXPLAIN QUERY PLAN SELECT * FROM users WHERE entity_id IN (1, 2)"
                        ).fetchone()[3].startswith("SEARCH users USING INTEGER PRIMARY KEY")
    conn.close()


def test_reference_stats_describe_training_data(artifacts_dir: Path):
    stats = json.loads((artifacts_dir / "reference_stats.json").read_text())
    amount = stats["features"]["amount"]
    assert amount["kind"] == "numeric" and amount["null_rate"] == 0.0
    assert amount["min"] <= amount["quantiles"]["0.5"] <= amount["max"]
    assert sum(amount["histogram"]["counts"]) == amount["count"]
    score = stats["features"]["credit_score"]
    assert 0.005 < score["null_rate"] < 0.05  # 2 % nulls were generated
    country = stats["features"]["country"]["frequencies"]
    assert abs(sum(country.values()) - 1.0) < 1e-9 and max(country, key=country.get) == "US"
    proba = stats["models"]["fraud"]["v1"]
    assert sum(proba["probability"]["histogram"]["counts"]) == proba["holdout_size"]


def test_training_is_deterministic(tmp_path: Path):
    a = build(tmp_path / "a", entities=2000, items=50, seed=3)
    b = build(tmp_path / "b", entities=2000, items=50, seed=3)
    assert a["models"] == b["models"] and a["features"] == b["features"]
    for name in ("fraud-v2.pkl", "churn-v1.pkl", "ranking-v1.pkl"):
        ma = pickle.loads((tmp_path / "a" / name).read_bytes())
        mb = pickle.loads((tmp_path / "b" / name).read_bytes())
        X = np.random.default_rng(0).normal(size=(50, ma.n_features_in_))
        X[:, :] = np.abs(X).round()  # valid category codes for the categorical columns
        assert np.array_equal(ma.predict_proba(X), mb.predict_proba(X)), name
    assert a["artifacts"]["features.sqlite"] == b["artifacts"]["features.sqlite"]
    with pytest.raises(ValueError, match="entities must be >= 1000"):
        build(tmp_path / "c", entities=10)


def _tampered_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    target = dst / "fraud-v2.pkl"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return dst


def test_mismatched_artifact_is_refused_in_process(artifacts_dir: Path, tmp_path: Path):
    from reference_service.app import create_app

    bad = _tampered_copy(artifacts_dir, tmp_path / "bad")
    with pytest.raises(ArtifactError, match="'fraud-v2.pkl' sha256 mismatch"):
        create_app({"artifacts_dir": bad})
    with pytest.raises(ArtifactError, match="no manifest.json"):
        create_app({"artifacts_dir": tmp_path / "empty"})


def test_mismatched_artifact_is_refused_by_gunicorn(artifacts_dir, tmp_path, reference_service):
    bad = _tampered_copy(artifacts_dir, tmp_path / "bad")
    svc = reference_service(workers=1, artifacts_dir=str(bad), wait=False)
    deadline = time.monotonic() + 60
    while svc.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert svc.process.returncode not in (None, 0)
    assert "'fraud-v2.pkl' sha256 mismatch" in svc.log()
