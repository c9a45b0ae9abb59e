"""The bundled map for Python services the harness knows nothing about, by value on stacks
shaped as py-spy records a FastAPI/uvicorn service (the second target's shape)."""

from __future__ import annotations

import pytest

from harness.run.collectors.stagemap import load_stage_map
from harness.rundir.stacks import parse_collapsed

SP = "/srv/.venv/lib/python3.11/site-packages"
PY = "/usr/lib/python3.11"
APP = "/srv/app"
PROC = 'process 7:"/srv/.venv/bin/python -m uvicorn app:app"'
LOOP = (f"{PROC};run ({SP}/uvicorn/main.py:580);run ({PY}/asyncio/runners.py:190)"
        f";BaseEventLoop._run_once ({PY}/asyncio/base_events.py:1922)"
        f";RequestResponseCycle.run_asgi ({SP}/uvicorn/protocols/http/h11_impl.py:407)"
        f";FastAPI.__call__ ({SP}/fastapi/applications.py:1054)"
        f";run_endpoint_function ({SP}/fastapi/routing.py:212)"
        f";predict ({APP}/service.py:88)")


@pytest.fixture(scope="module")
def smap():
    return load_stage_map("python_web")


@pytest.mark.parametrize(("tail", "stage"), [
    (f";predict_batch ({APP}/model.py:40)"
     f";ForestRegressor.predict ({SP}/sklearn/ensemble/_forest.py:1060)"
     f";_average ({SP}/numpy/core/fromnumeric.py:10)", "infer"),
    (f";fetch_features ({APP}/store.py:31);Redis.hmget ({SP}/redis/asyncio/client.py:600)"
     f";SocketBuffer.readline ({SP}/redis/_parsers/socket.py:20)", "fetch"),
    (f";fetch_sync ({APP}/store.py:55);execute ({SP}/aiosqlite/core.py:90)", "fetch"),
    (f";serialize_response ({SP}/fastapi/routing.py:160);BaseModel.model_dump"
     f" ({SP}/pydantic/main.py:400)", "serialize"),
    (f";encode ({APP}/encoding.py:12);dumps ({PY}/json/__init__.py:231)", "serialize"),
    (f";score_rules ({APP}/rules.py:17);_weigh ({APP}/rules.py:40)", "own_code"),
    ("", "own_code"),  # the handler itself on CPU
    (f";get ({SP}/httpx/_client.py:1000)", "fetch"),
])
def test_a_fastapi_service_by_library(smap, tail: str, stage: str) -> None:
    (stack,) = parse_collapsed(f"{LOOP}{tail} 3\n")
    assert smap.classify(stack)[0] == stage


def test_the_event_loop_and_idle_threads_are_framework_and_waiting(smap) -> None:
    (idle,) = parse_collapsed(f"{PROC};run ({PY}/asyncio/runners.py:190)"
                              f";BaseEventLoop._run_once ({PY}/asyncio/base_events.py:1922)"
                              f";EpollSelector.select ({PY}/selectors.py:468) 5\n")
    assert smap.classify(idle) == ("framework", True)
    (worker,) = parse_collapsed(f"{PROC};Thread._bootstrap ({PY}/threading.py:1002)"
                                f";Thread.run ({PY}/threading.py:982)"
                                f";_worker ({PY}/concurrent/futures/thread.py:81)"
                                f";Condition.wait ({PY}/threading.py:320) 2\n")
    assert smap.classify(worker) == ("framework", True)
