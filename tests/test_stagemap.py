"""Stage maps on hand-written collapsed stacks, checked by value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.run.collectors.stagemap import (
    DEFAULT_MAP_PATH,
    OTHER,
    StageMap,
    build_stages,
    load_stage_map,
    summarize_view,
)
from harness.rundir.stacks import parse_collapsed

SP = "/venv/lib/python3.11/site-packages"
PY = "/usr/lib/python3.11"
RS = "/srv/app/reference_service"
PROC = 'process 10:"gunicorn -w 2 app:app";process 11:"gunicorn -w 2 app:app"'
ROOT = (f"{PROC};run (/srv/app/bin/gunicorn:8)"
        f";SyncWorker.handle ({SP}/gunicorn/workers/sync.py:141)"
        f";Flask.wsgi_app ({SP}/flask/app.py:1511)")


def stack(*frames: str, count: int = 1) -> str:
    return ";".join((ROOT,) + frames) + f" {count}"


@pytest.fixture(scope="module")
def smap() -> StageMap:
    return load_stage_map()


def classify(smap: StageMap, line: str) -> tuple[str, bool]:
    (only,) = parse_collapsed(line)
    return smap.classify(only)


def test_default_map_is_the_bundled_reference_map(smap: StageMap) -> None:
    assert smap.name == "reference_service"
    assert smap.source == str(DEFAULT_MAP_PATH)
    assert smap.stages == ["fetch", "infer", "serialize", "framework", OTHER]
    assert load_stage_map("reference_service").to_dict() == smap.to_dict()


@pytest.mark.parametrize(
    ("frames", "want"),
    [
        # sklearn and numpy below the model code: inference.
        ((f"predict ({RS}/app.py:40)", f"Model.predict ({RS}/inference.py:31)",
          f"LogisticRegression.predict_proba ({SP}/sklearn/linear_model/_logistic.py:1380)",
          f"dot ({SP}/numpy/core/multiarray.py:741)"), "infer"),
        # numpy called by the feature store is feature fetch, not inference.
        ((f"predict ({RS}/app.py:38)", f"SqliteStore.get ({RS}/store/sqlite.py:52)",
          f"asarray ({SP}/numpy/_core/numeric.py:101)"), "fetch"),
        # sqlite3's C code shows as the store's own frame.
        ((f"predict ({RS}/app.py:38)", f"SqliteStore.get ({RS}/store/sqlite.py:50)"), "fetch"),
        # redis client frames below the store: fetch via the store rule.
        ((f"predict ({RS}/app.py:38)", f"RedisStore.get ({RS}/store/redis_store.py:20)",
          f"Connection.send_command ({SP}/redis/connection.py:560)"), "fetch"),
        ((f"predict ({RS}/app.py:44)", f"to_json ({RS}/serialize.py:12)",
          f"JSONEncoder.encode ({PY}/json/encoder.py:200)"), "serialize"),
        # json under Flask only (request parsing) is still serialization.
        ((f"Request.get_json ({SP}/werkzeug/wrappers/request.py:600)",
          f"loads ({PY}/json/__init__.py:346)"), "serialize"),
        # the view function's own glue code sits under Flask frames.
        ((f"predict ({RS}/app.py:36)",), "framework"),
        # inference that calls the store: the deepest service frame (store) wins.
        ((f"Model.predict ({RS}/inference.py:25)", f"SqliteStore.get ({RS}/store/sqlite.py:50)"),
         "fetch"),
    ],
)
def test_stage_of_a_stack(smap: StageMap, frames: tuple[str, ...], want: str) -> None:
    assert classify(smap, stack(*frames)) == (want, False)


def test_unmatched_and_process_only_stacks_are_other(smap: StageMap) -> None:
    assert classify(smap, "main (/opt/tool/run.py:3);work (/opt/tool/run.py:9) 4") == (OTHER, False)
    assert classify(smap, f"{PROC} 2") == (OTHER, False)


def test_short_filenames_match_directory_globs(smap: StageMap) -> None:
    line = "fit (sklearn/linear_model/_base.py:10);_fit (sklearn/utils/x.py:3) 1"
    assert classify(smap, line) == ("infer", False)


def test_blocking_leaf_is_waiting_within_its_stage(smap: StageMap) -> None:
    wait = f"Event.wait ({PY}/threading.py:629)"
    line = stack(f"predict ({RS}/app.py:38)", f"RedisStore.get ({RS}/store/redis_store.py:20)",
                 wait)
    assert classify(smap, line) == ("fetch", True)
    redis_read = stack(f"RedisStore.get ({RS}/store/redis_store.py:20)",
                       f"Connection.read_response ({SP}/redis/connection.py:600)")
    assert classify(smap, redis_read) == ("fetch", True)
    idle_worker = (f"{PROC};run (/srv/app/bin/gunicorn:8);SyncWorker.run "
                   f"({SP}/gunicorn/workers/sync.py:125);SyncWorker.wait "
                   f"({SP}/gunicorn/workers/sync.py:36) 7")
    assert classify(smap, idle_worker) == ("framework", True)
    # a function merely named like a wait call elsewhere is not waiting
    assert classify(smap, stack(f"wait ({RS}/app.py:99)")) == ("framework", False)


def test_rule_order_decides_within_one_frame() -> None:
    smap = StageMap.from_dict({"rules": [
        {"stage": "first", "function": "handler"},
        {"stage": "second", "file": "*/svc.py"},
    ]})
    assert classify(smap, "main (/x/main.py:1);handler (/x/svc.py:5) 1") == ("first", False)
    assert classify(smap, "main (/x/main.py:1);other (/x/svc.py:9) 1") == ("second", False)
    assert smap.stages == ["first", "second", OTHER]


def test_regex_matchers_search_anywhere() -> None:
    smap = StageMap.from_dict({"rules": [
        {"stage": "feat", "file_regex": r"/features?/", "function_regex": r"^lookup_"},
    ]})
    hit = "a (/s/features/db.py:1);lookup_user (/s/features/db.py:2) 1"
    miss = "a (/s/features/db.py:1);get_user (/s/features/db.py:2) 1"
    assert classify(smap, hit)[0] == "feat"
    assert classify(smap, miss)[0] == OTHER


def test_summary_by_value(smap: StageMap) -> None:
    infer_leaf = f"dot ({SP}/numpy/core/multiarray.py:741)"
    model = f"Model.predict ({RS}/inference.py:31)"
    store = f"SqliteStore.get ({RS}/store/sqlite.py:50)"
    wait = f"Condition.wait ({PY}/threading.py:327)"
    text = "\n".join([
        stack(model, infer_leaf, count=6),
        stack(model, count=2),
        stack(store, count=3),
        stack(store, wait, count=5),
        # recursion: the function is counted once per sample in its total
        stack(f"walk ({RS}/store/tree.py:5)", f"walk ({RS}/store/tree.py:7)", count=4),
        "main (/opt/tool/run.py:3) 1",
    ])
    view = summarize_view(parse_collapsed(text), smap, top=3)
    assert view["samples"] == 21
    stages = view["stages"]
    assert {s: v["samples"] for s, v in stages.items()} == {
        "fetch": 12, "infer": 8, "serialize": 0, "framework": 0, "other": 1}
    assert stages["fetch"]["share"] == round(12 / 21, 4)
    assert stages["fetch"]["waiting"] == 5
    assert stages["infer"]["waiting"] == 0
    assert stages["infer"]["top_self"] == [
        {"function": f"dot ({SP}/numpy/core/multiarray.py)", "samples": 6},
        {"function": f"Model.predict ({RS}/inference.py)", "samples": 2},
    ]
    assert stages["fetch"]["top_self"] == [
        {"function": f"Condition.wait ({PY}/threading.py)", "samples": 5},
        {"function": f"walk ({RS}/store/tree.py)", "samples": 4},
        {"function": f"SqliteStore.get ({RS}/store/sqlite.py)", "samples": 3},
    ]
    totals = {e["function"]: e["samples"] for e in stages["fetch"]["top_total"]}
    # every fetch stack runs through the gunicorn entry point: 12; top is cut at 3
    assert len(totals) == 3 and set(totals.values()) == {12}
    view10 = summarize_view(parse_collapsed(text), smap)
    walk = [e for e in view10["stages"]["fetch"]["top_total"]
            if e["function"] == f"walk ({RS}/store/tree.py)"]
    assert walk == [{"function": f"walk ({RS}/store/tree.py)", "samples": 4}]
    assert stages["serialize"] == {"samples": 0, "share": 0.0, "waiting": 0,
                                   "top_self": [], "top_total": []}


def test_build_stages_keeps_contract_shape(smap: StageMap) -> None:
    oncpu = parse_collapsed(stack(f"Model.predict ({RS}/inference.py:31)", count=3))
    wall = parse_collapsed(stack(f"to_json ({RS}/serialize.py:3)", count=2))
    doc = build_stages({"oncpu": oncpu, "wall": wall}, smap)
    assert doc["oncpu"] == {"fetch": 0, "infer": 3, "serialize": 0, "framework": 0, "other": 0}
    assert doc["wall"] == {"fetch": 0, "infer": 0, "serialize": 2, "framework": 0, "other": 0}
    assert doc["map"]["name"] == "reference_service"
    assert doc["detail"]["oncpu"]["stages"]["infer"]["share"] == 1.0
    json.dumps(doc)  # must be JSON-serialisable as written


def test_empty_view_has_zero_shares(smap: StageMap) -> None:
    view = summarize_view([], smap)
    assert view["samples"] == 0
    assert all(s["share"] == 0.0 and s["samples"] == 0 for s in view["stages"].values())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": []}, "rules must be a non-empty list"),
        ({"rules": [{"stage": "x"}]}, "needs at least one of"),
        ({"rules": [{"stage": "", "file": "*"}]}, "stage must be a non-empty string (got '')"),
        ({"rules": [{"stage": "x", "fil": "*"}]}, "unknown rule keys ['fil']"),
        ({"rules": [{"stage": "x", "file_regex": "("}]}, "file_regex is not a valid regex"),
        ({"rules": [{"stage": "x", "file": "*", "fallback": "yes"}]},
         "fallback must be true or false (got 'yes')"),
        ({"rules": [{"stage": "x", "file": 3}]}, "file must be a non-empty string (got 3)"),
        ({"rules": [{"stage": "x", "file": "*"}], "wait": {}}, "wait must be a list"),
        ({"rules": [{"stage": "x", "file": "*"}], "stages": []}, "unknown keys ['stages']"),
    ],
)
def test_bad_maps_name_the_problem(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match="stage map") as info:
        StageMap.from_dict(data, source="my.json")
    assert message in str(info.value)
    assert "my.json" in str(info.value)


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="must exist"):
        load_stage_map(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{rules: ")
    with pytest.raises(ValueError, match="not valid JSON") as info:
        load_stage_map(broken)
    assert str(broken) in str(info.value)
    with pytest.raises(ValueError, match=r"bundled map name \['mlserver', 'python_web', "
                                         r"'reference_service'\]"):
        load_stage_map("no_such_map")


def test_custom_map_file_without_wait_uses_default_wait_rules(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"rules": [{"stage": "model", "file": "*/model/*"}]}))
    smap = load_stage_map(path)
    assert smap.name == "mine"
    line = f"run (/s/model/m.py:1);Event.wait ({PY}/threading.py:629) 1"
    assert smap.classify(parse_collapsed(line)[0]) == ("model", True)
