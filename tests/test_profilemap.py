"""Which stage map reads a profile: the automatic choice among the bundled maps by value on
stacks shaped as py-spy records the reference service, a FastAPI service and MLServer; the
given map; the served service's map from run.json; `--stage-map NAME|FILE` on the command
line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.run.collectors import profilemap
from harness.run.collectors.profile import SPEC, ProfileCollector, ProfileOptions
from harness.run.collectors.stagemap import OTHER, StageMap, bundled_names, load_stage_map
from harness.rundir.stacks import parse_collapsed

SP = "/srv/.venv/lib/python3.11/site-packages"
PY = "/usr/lib/python3.11"
REF = ('process 10:"gunicorn reference_service.app:app";process 11:"gunicorn"'
       f";run ({SP}/gunicorn/app/base.py:72);SyncWorker.handle ({SP}/gunicorn/workers/sync.py:141)"
       f";Flask.wsgi_app ({SP}/flask/app.py:1511);predict (/srv/reference_service/app.py:36)")
REFERENCE = (f"{REF};Model.predict (/srv/reference_service/inference.py:31)"
             f";LogisticRegression.predict_proba ({SP}/sklearn/linear_model/_logistic.py:1380) 6\n"
             f"{REF};SqliteStore.get (/srv/reference_service/store/sqlite.py:50) 2\n"
             f"{REF};to_json (/srv/reference_service/serialize.py:12) 1\n"
             f"{REF} 1\n")
API = ('process 7:"python -m uvicorn app:app";run ({SP}/uvicorn/main.py:580)'
       f";run ({PY}/asyncio/runners.py:190)"
       f";RequestResponseCycle.run_asgi ({SP}/uvicorn/protocols/http/h11_impl.py:407)"
       f";FastAPI.__call__ ({SP}/fastapi/applications.py:1054)"
       f";run_endpoint_function ({SP}/fastapi/routing.py:212);predict (/srv/app/service.py:88)")
FASTAPI = (f"{API};predict_batch (/srv/app/model.py:40)"
           f";ForestRegressor.predict ({SP}/sklearn/ensemble/_forest.py:1060) 5\n"
           f"{API};fetch (/srv/app/store.py:31);Redis.hmget ({SP}/redis/asyncio/client.py:600) 3\n"
           f"{API} 2\n")
MLS = f"{SP}/mlserver"
ML = ('process 100:"/venv/bin/mlserver start /srv/models";run ({PY}/asyncio/runners.py:190)'
      f";RequestResponseCycle.run_asgi ({SP}/uvicorn/protocols/http/h11_impl.py:407)"
      f";FastAPI.__call__ ({SP}/fastapi/applications.py:1054)"
      f";custom_route_handler ({MLS}/rest/app.py:47);Endpoints.infer ({MLS}/rest/endpoints.py:99)")
MLSERVER = (f"{ML};DataPlane.infer ({MLS}/handlers/dataplane.py:101)"
            f";SKLearnModel.predict ({SP}/mlserver_sklearn/sklearn.py:44)"
            f";ForestClassifier.predict_proba ({SP}/sklearn/ensemble/_forest.py:900) 6\n"
            f"{ML};decode_request ({MLS}/codecs/numpy.py:40) 2\n"
            f"{ML} 1\n"
            f'process 100:"/venv/bin/mlserver start";Thread.run ({PY}/threading.py:982)'
            f";Condition.wait ({PY}/threading.py:320) 1\n")


def stacks(text: str) -> list:
    return parse_collapsed(text)


@pytest.mark.parametrize(("text", "want"), [(REFERENCE, "reference_service"),
                                            (FASTAPI, "python_web"), (MLSERVER, "mlserver")])
def test_auto_picks_the_map_that_explains_the_profile(text: str, want: str) -> None:
    smap, covered = profilemap.choose(stacks(text), [load_stage_map(n) for n in bundled_names()])
    assert smap.name == want
    assert covered[want].other_share == 0.0
    assert covered[want].eligible


def test_coverage_by_value() -> None:
    mls, ref, web = (load_stage_map(n) for n in ("mlserver", "reference_service", "python_web"))
    # MLServer: 10 samples, 9 with an mlserver frame; the reference map explains 6 (sklearn)
    got = profilemap.coverage(mls, stacks(MLSERVER))
    assert (got.samples, got.other_share, got.detected_share) == (10, 0.0, 0.9)
    assert got.service_share == 0.9  # the idle thread is decided by a fallback (Thread.run)
    got = profilemap.coverage(ref, stacks(MLSERVER))
    assert (got.other_share, got.detected_share, got.eligible) == (0.4, 0.0, False)
    got = profilemap.coverage(web, stacks(MLSERVER))
    assert (got.other_share, got.service_share, got.detected_share, got.eligible) == \
        (0.0, 0.0, None, True)


def test_the_mlserver_map_explains_any_fastapi_service_but_is_not_chosen() -> None:
    """Its FastAPI/Starlette service rules leave nothing in 'other' on a plain FastAPI
    service, all of it 'framework' (inference included): its service was not seen, so it
    is no candidate."""
    mls = load_stage_map("mlserver")
    got = profilemap.coverage(mls, stacks(FASTAPI))
    assert got.other_share == 0.0 and got.service_share == 1.0 and got.detected_share == 0.0
    assert {mls.classify(s)[0] for s in stacks(FASTAPI)} == {"framework"}
    assert profilemap.choose(stacks(FASTAPI), [mls, load_stage_map("python_web")])[0].name \
        == "python_web"


def _map(name: str, rules: list[dict], detect: list[dict] | None = None) -> StageMap:
    doc: dict = {"name": name, "rules": rules}
    if detect is not None:
        doc["detect"] = detect
    return StageMap.from_dict(doc)


def test_ties_go_to_the_more_specific_map_and_only_within_two_points() -> None:
    text = "main (/srv/app/main.py:1);work (/srv/app/work.py:2) 97\nmain (/srv/app/main.py:1) 3\n"
    generic = _map("generic", [{"stage": "app", "file": "*/app/*", "fallback": True}])
    specific = _map("specific", [{"stage": "work", "file": "*/work.py"},
                                 {"stage": "main", "function": "main"}],
                    detect=[{"file": "*/work.py"}])
    # both leave 0 % in other: the map whose service was seen wins
    assert profilemap.choose(stacks(text), [generic, specific])[0].name == "specific"
    # the specific map leaves 3 % (> 2 points more than 0 %): the generic one wins
    partial = _map("specific", [{"stage": "work", "file": "*/work.py"}],
                   detect=[{"file": "*/work.py"}])
    smap, covered = profilemap.choose(stacks(text), [generic, partial])
    assert covered["specific"].other_share == 0.03
    assert smap.name == "generic"
    # within 2 points (1 sample of 100 in other) it is a tie again
    one_left = "main (/srv/app/main.py:1);work (/srv/app/work.py:2) 99\nidle (/x.py:1) 1\n"
    assert profilemap.choose(stacks(one_left), [generic, partial])[0].name == "specific"
    with pytest.raises(ValueError, match="at least one map"):
        profilemap.pick([], {})


def test_resolve_given_served_and_auto(tmp_path: Path) -> None:
    ref = stacks(REFERENCE)
    given = load_stage_map("python_web")
    choice = profilemap.resolve(given, tmp_path, ref)
    assert (choice.smap.name, choice.chosen) == ("python_web", "given")
    assert set(choice.candidates) == set(bundled_names())
    # no run.json: an external target, the automatic choice
    assert profilemap.resolve(None, tmp_path, ref).chosen == "auto"
    (tmp_path / "run.json").write_text(json.dumps(
        {"target": {"served_by_harness": True, "service": "reference"}}))
    choice = profilemap.resolve(None, tmp_path, stacks(FASTAPI))
    assert (choice.smap.name, choice.chosen) == ("reference_service", "served")
    doc = choice.to_dict()
    assert doc["other_share"] == choice.candidates["reference_service"].other_share
    assert doc["candidates"]["python_web"] == {"other_share": 0.0, "service_share": 0.0,
                                               "detected_share": None, "eligible": True}
    (tmp_path / "run.json").write_text("{not json")
    assert profilemap.served_service(tmp_path) is None
    assert profilemap.unresolved(None)["chosen"] is None


def test_stage_map_flag_takes_bundled_names_and_files(tmp_path: Path) -> None:
    """harness run --stage-map mlserver (a bundled name), ./FILE (a file, even one named like
    a bundled map), and an unknown name listing the bundled ones."""
    parser = argparse.ArgumentParser()
    assert SPEC.add_flags is not None and SPEC.from_args is not None
    SPEC.add_flags(parser.add_argument_group("profile"))
    opts = SPEC.from_args(parser.parse_args(["--stage-map", "mlserver"]))
    assert isinstance(opts, ProfileOptions) and opts.stage_map == "mlserver"
    collector = ProfileCollector.from_options({"stage_map": opts.stage_map})
    assert collector.stage_map is not None and collector.stage_map.name == "mlserver"
    own = tmp_path / "mlserver"
    own.write_text(json.dumps({"name": "mine", "rules": [{"stage": "x", "file": "*"}]}))
    opts = SPEC.from_args(parser.parse_args(["--stage-map", str(own)]))
    assert opts is not None and load_stage_map(opts.stage_map).name == "mine"
    with pytest.raises(ValueError, match=r"bundled map name \['mlserver', 'python_web', "
                                         r"'reference_service'\] \(got 'nosuch'\)"):
        SPEC.from_args(parser.parse_args(["--stage-map", "nosuch"]))
    assert SPEC.from_args(parser.parse_args([])) == ProfileOptions()
    assert ProfileCollector().stage_map is None  # chosen after the run


def test_detect_rules_are_checked_like_the_others() -> None:
    with pytest.raises(ValueError, match=r"detect\[0\]"):
        StageMap.from_dict({"rules": [{"stage": "x", "file": "*"}], "detect": [{"nope": 1}]})
    smap = _map("m", [{"stage": "x", "file": "*"}], detect=[{"file_regex": "/svc/"}])
    assert smap.to_dict()["detect"] == [{"file_regex": "/svc/"}]
    (hit,) = stacks("f (/srv/svc/a.py:1) 1\n")
    (miss,) = stacks("f (/srv/other/a.py:1) 1\n")
    assert smap.detects(hit) and not smap.detects(miss)
    assert smap.classify(miss) == ("x", False) and OTHER in smap.stages


# -- end to end: harness run against the FastAPI example service --------------------------
@pytest.mark.slow
def test_a_fastapi_service_gets_the_generic_map_or_the_one_given(tmp_path: Path) -> None:
    """A target the harness did not start: the bundled map that explains its profile is
    chosen and named in the summary ("other" < 15 %), --stage-map overrides it with a
    bundled name, and --metrics-url and --tag reach the run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import free_port

    repo = Path(__file__).resolve().parent.parent
    artifacts = tmp_path / "artifacts"
    subprocess.run([sys.executable, "-m", "examples.fastapi_service.train", "--out",
                    str(artifacts), "--entities", "3000", "--orders", "6000"],
                   cwd=repo, check=True, capture_output=True, timeout=180)
    port = free_port()
    log = (tmp_path / "service.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "examples.fastapi_service.serve", "--port", str(port),
         "--workers", "1", "--store", "sqlite", "--artifacts", str(artifacts)],
        cwd=repo, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FASTSVC_ENTITIES": "3000"}

    def harness(*extra: str) -> tuple[str, dict, dict]:
        out = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", "examples/fastapi_service/locustfile.py",
             "--target", url, "--users", "4", "--duration", "5s", "--warmup", "1s",
             "--out", str(tmp_path / "runs"), *extra],
            cwd=repo, env=env, capture_output=True, text=True, timeout=180)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("run directory: ")]
        assert line, out.stdout + out.stderr
        run = Path(line[-1].split()[2])
        return (out.stdout, json.loads((run / "profile" / "status.json").read_text()),
                json.loads((run / "run.json").read_text()))

    try:
        deadline = time.monotonic() + 120
        while "fastsvc: ready at" not in (tmp_path / "service.log").read_text():
            assert service.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "service.log").read_text()
            time.sleep(0.2)
        auto_out, auto, meta = harness("--tag", "workers=1")
        given_out, given, _ = harness("--stage-map", "mlserver", "--metrics-url",
                                      url + "/metrics")
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(30)
        log.close()
    smap = auto["stage_map"]
    assert (smap["name"], smap["chosen"]) == ("python_web", "auto"), smap
    assert smap["other_share"] < 0.15
    assert smap["candidates"]["reference_service"]["other_share"] > smap["other_share"]
    assert smap["candidates"]["mlserver"]["eligible"] is False
    assert "stage map python_web (auto)" in auto_out
    assert auto["oncpu_check"]["verdict"] in ("ok", "runnable_counted"), auto["oncpu_check"]
    assert "profile_cpu:" in auto_out
    assert meta["target"]["models"]["delivery_eta"]["default_version"] == "v1"
    assert meta["load"]["tags"] == {"workers": "1"}
    assert (given["stage_map"]["name"], given["stage_map"]["chosen"]) == ("mlserver", "given")
    assert "stage map mlserver (given)" in given_out
    assert "✓ metrics: scraped 2 times at " + url + "/metrics" in given_out
