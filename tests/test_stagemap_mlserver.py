"""The bundled MLServer stage map on stacks as py-spy recorded them from MLServer 1.7.1
(benchmarks/mlserver_target.py runs; paths shortened), checked by value."""

from __future__ import annotations

import pytest

from harness.run.collectors.stagemap import OTHER, StageMap, load_stage_map
from harness.rundir.stacks import parse_collapsed

SP = "/venv-mlserver/lib/python3.11/site-packages"
PY = "/usr/lib/python3.11"
MAIN = ('process 100:"/venv-mlserver/bin/python /venv-mlserver/bin/mlserver start /srv/models"')
WORKER = (MAIN + ';process 102:"/venv-mlserver/bin/python -B -c from multiprocessing.spawn '
          'import spawn_main; spawn_main(tracker_fd=16, pipe_handle=22) --multiprocessing-fork"')
TRACKER = (MAIN + ';process 101:"/venv-mlserver/bin/python -B -c from multiprocessing.'
           'resource_tracker import main;main(15)"')
MAIN_LOOP = (f"{MAIN};<module> (/venv-mlserver/bin/mlserver:8)"
             f";main ({SP}/mlserver/cli/main.py:269)"
             f";Command.__call__ ({SP}/click/core.py:1653)"
             f";click_async.<locals>.wrapper ({SP}/mlserver/cli/main.py:24)"
             f";run ({PY}/asyncio/runners.py:190);Runner.run ({PY}/asyncio/runners.py:118)")
ROUTE = (f";RequestResponseCycle.run_asgi ({SP}/uvicorn/protocols/http/h11_impl.py:407)"
         f";FastAPI.__call__ ({SP}/fastapi/applications.py:1054)"
         f";PrometheusMiddleware.__call__ ({SP}/starlette_exporter/middleware.py:450)"
         f";Route.handle ({SP}/starlette/routing.py:288)"
         f";APIRoute.get_route_handler.<locals>.custom_route_handler"
         f" ({SP}/mlserver/rest/app.py:47)")
WORKER_LOOP = (f"{WORKER};<module> (<string>:1);spawn_main ({PY}/multiprocessing/spawn.py:122)"
               f";BaseProcess._bootstrap ({PY}/multiprocessing/process.py:314)"
               f";Worker.run ({SP}/mlserver/parallel/worker.py:71)"
               f";run ({PY}/asyncio/runners.py:190);Runner.run ({PY}/asyncio/runners.py:118)")
PREDICT = (f";Worker._process_request ({SP}/mlserver/parallel/worker.py:136)"
           f";SKLearnModel.predict ({SP}/mlserver_sklearn/sklearn.py:44)"
           f";SKLearnModel._get_model_outputs ({SP}/mlserver_sklearn/sklearn.py:99)")
THREAD = (f";Thread._bootstrap ({PY}/threading.py:1002)"
          f";Thread._bootstrap_inner ({PY}/threading.py:1045)"
          f";Thread.run ({PY}/threading.py:982)")


@pytest.fixture(scope="module")
def smap() -> StageMap:
    return load_stage_map("mlserver")


def classify(smap: StageMap, line: str) -> tuple[str, bool]:
    (only,) = parse_collapsed(line + " 1")
    return smap.classify(only)


def test_the_map_loads_with_its_stages(smap: StageMap) -> None:
    assert smap.name == "mlserver"
    assert smap.stages == ["infer", "serialize", "dispatch", "framework", OTHER]


@pytest.mark.parametrize(
    ("line", "want"),
    [
        # the model in a parallel worker: sklearn (and the stdlib it calls) below the runtime
        (WORKER_LOOP + PREDICT
         + f";ForestClassifier.predict ({SP}/sklearn/ensemble/_forest.py:903)"
         + f";Parallel._get_sequential_output ({SP}/joblib/parallel.py:1940)"
         + f";resetwarnings ({PY}/warnings.py:198)", ("infer", False)),
        # the same model in the main process (parallel_workers 0), under FastAPI
        (MAIN_LOOP + ROUTE + f";Endpoints.infer ({SP}/mlserver/rest/endpoints.py:103)"
         + f";DataPlane.infer ({SP}/mlserver/handlers/dataplane.py:112)"
         + f";SKLearnModel.predict ({SP}/mlserver_sklearn/sklearn.py:44)"
         + f";DecisionTreeClassifier.predict_proba ({SP}/sklearn/tree/_classes.py:1052)",
         ("infer", False)),
        # MLServer's codecs decoding the tensor: serialize, even inside the runtime's call
        (WORKER_LOOP + PREDICT + f";MLModel.decode_request ({SP}/mlserver/model.py:204)"
         + f";NumpyCodec.decode_input ({SP}/mlserver/codecs/numpy.py:160)"
         + f";asarray ({SP}/numpy/_core/numeric.py:101)", ("serialize", False)),
        # FastAPI validating the request body with pydantic
        (MAIN_LOOP + ROUTE + f";get_request_handler.<locals>.app ({SP}/fastapi/routing.py:291)"
         + f";ModelField.validate ({SP}/fastapi/_compat.py:130)"
         + f";TypeAdapter.validate_python ({SP}/pydantic/type_adapter.py:410)",
         ("serialize", False)),
        # pickling a message for the worker in a queue's feeder thread
        (MAIN + THREAD + f";Queue._feed ({PY}/multiprocessing/queues.py:244)"
         + f";ForkingPickler.dumps ({PY}/multiprocessing/reduction.py:51)", ("serialize", False)),
        # handing a request to a worker
        (MAIN_LOOP + ROUTE + f";ParallelModel.predict ({SP}/mlserver/parallel/model.py:54)"
         + f";Worker.send_request ({SP}/mlserver/parallel/worker.py:182)"
         + f";Queue.put ({PY}/multiprocessing/queues.py:96)"
         + f";Condition.notify ({PY}/threading.py:382)", ("dispatch", False)),
        # a feeder thread with nothing to send: dispatch, waiting
        (WORKER + THREAD + f";Queue._feed ({PY}/multiprocessing/queues.py:231)"
         + f";Condition.wait ({PY}/threading.py:327)", ("dispatch", True)),
        # the worker's pool thread blocked in select() on its request queues
        (WORKER + THREAD + f";_worker ({PY}/concurrent/futures/thread.py:83)"
         + f";_WorkItem.run ({PY}/concurrent/futures/thread.py:58)"
         + f";Worker._select ({SP}/mlserver/parallel/worker.py:120)", ("dispatch", True)),
        # HTTP parsing on the event loop
        (MAIN_LOOP + f";H11Protocol.data_received ({SP}/uvicorn/protocols/http/h11_impl.py:175)"
         + f";H11Protocol.handle_events ({SP}/uvicorn/protocols/http/h11_impl.py:202)"
         + f";Connection.next_event ({SP}/h11/_connection.py:469)", ("framework", False)),
        # uvloop in native code (mostly epoll): the main process's event loop, waiting
        (MAIN_LOOP, ("framework", True)),
        # the worker's own event loop between requests
        (WORKER_LOOP, ("dispatch", True)),
        # gRPC aio's poller thread (a native target) and an idle thread-pool thread
        (MAIN + THREAD, ("framework", True)),
        (MAIN + THREAD + f";_worker ({PY}/concurrent/futures/thread.py:81)", ("framework", True)),
        # multiprocessing's resource tracker reading its pipe
        (TRACKER + ";<module> (<string>:1)"
         + f";main ({PY}/multiprocessing/resource_tracker.py:227)", ("framework", True)),
        # code the map does not know, outside any MLServer frame
        (f"{MAIN};<module> (/srv/other.py:3);work (/srv/other.py:9)", (OTHER, False)),
    ],
)
def test_mlserver_stacks(smap: StageMap, line: str, want: tuple[str, bool]) -> None:
    assert classify(smap, line) == want
