"""The reference service under hostile clients, and the project's security defaults.

Oversized bodies, deep nesting, huge batches, NaN/inf, wrong content types and slowloris-
style clients against real gunicorn on 127.0.0.1: every answer is a JSON error naming the
rule (never a 5xx), no worker dies, and ``/healthz`` keeps answering. The stated bound for
slow clients: with W sync workers, S slow connections and a read deadline D
(``REFSVC_READ_DEADLINE_S``), a health check answers within ceil(S / W) * D + 2 s.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 2.0
WORKERS = 2
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def svc(reference_service_module: Any) -> Iterator[Any]:
    service = reference_service_module(workers=WORKERS,
                                       env={"REFSVC_READ_DEADLINE_S": str(DEADLINE_S)})
    workers = service.wait_for_workers(WORKERS)
    yield service
    assert sorted(service.worker_pids()) == workers, service.log()[-3000:]  # no worker died


def _error(r: Any, status: int, kind: str) -> dict[str, Any]:
    assert r.status == status, (r.status, r.body[:300])
    body = r.json()
    assert body["error"] == kind and body["message"], body
    return body


PREDICT = "/v1/models/fraud/predict"
ONE = {"entity_id": 7, "features": {"amount": 12.5}}


def test_oversized_bodies_get_413_and_the_service_stays_up(svc: Any, http: Any) -> None:
    two_mib = json.dumps({"instances": [ONE], "pad": "x" * (2 << 20)}).encode()
    body = _error(http("POST", svc.url + PREDICT, two_mib), 413, "too_large")
    assert "1048576" in body["message"]
    # Beyond the drain limit the service answers 413 without reading it all; the client may
    # see the connection closed while it is still sending. Either way: no 5xx, still up.
    try:
        r = http("POST", svc.url + PREDICT, b"[" + b" " * (40 << 20), timeout=20)
        assert r.status == 413
    except (ConnectionError, OSError):
        pass
    assert http("GET", svc.url + "/healthz").status == 200


def test_deep_nesting_is_a_400_or_422_naming_the_rule(svc: Any, http: Any) -> None:
    body = _error(http("POST", svc.url + PREDICT, b"[" * 200_000 + b"]" * 200_000), 400,
                  "bad_json")
    assert "nested too deeply" in body["message"] or "malformed" in body["message"]
    nested: Any = 1.0
    for _ in range(5000):
        nested = {"a": nested}
    raw = json.dumps({"instances": [{"entity_id": 1, "features": {"amount": 1.0}}],
                      "version": "v1"})[:-1] + ', "deep": ' + "[" * 900 + "]" * 900 + "}"
    _error(http("POST", svc.url + PREDICT, raw.encode()), 422, "validation_error")
    try:
        deep = json.dumps({"instances": [{"entity_id": 1, "features": {"amount": nested}}]})
    except RecursionError:  # the client's own encoder gives up first: build it by hand
        deep = ('{"instances": [{"entity_id": 1, "features": {"amount": '
                + '{"a": ' * 5000 + "1" + "}" * 5000 + "}}]}")
    r = http("POST", svc.url + PREDICT, deep.encode())
    assert r.status in (400, 422) and r.json()["error"] in ("bad_json", "validation_error")


def test_huge_batches_are_bounded(svc: Any, http: Any) -> None:
    full = http("POST", svc.url + PREDICT, {"instances": [ONE] * 256}, timeout=60)
    assert full.status == 200 and len(full.json()["predictions"]) == 256
    body = _error(http("POST", svc.url + PREDICT, {"instances": [ONE] * 257}), 422,
                  "validation_error")
    assert body["field"] == "instances" and "257" in body["message"]
    # 20,000 tiny instances fit in the 1 MiB limit: rejected by count, before any work.
    t0 = time.monotonic()
    _error(http("POST", svc.url + PREDICT, {"instances": [{}] * 20_000}), 422,
           "validation_error")
    assert time.monotonic() - t0 < 5
    ranking = {"instances": [{"entity_id": 1, "item_ids": list(range(100_000))}]}
    body = _error(http("POST", svc.url + "/v1/models/ranking/predict", ranking), 422,
                  "validation_error")
    assert body["field"] == "instances[0].item_ids"


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999",
                                   "1" + "0" * 400])
def test_non_finite_numbers_are_rejected_naming_the_field(svc: Any, http: Any,
                                                          token: str) -> None:
    raw = ('{"instances": [{"entity_id": 1, "features": {"amount": ' + token + "}}]}").encode()
    body = _error(http("POST", svc.url + PREDICT, raw), 422, "validation_error")
    assert body["field"] == "instances[0].features.amount"
    assert "finite" in body["message"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=zz", "application/xml", ""])
def test_wrong_content_types_never_get_a_5xx(svc: Any, http: Any, ctype: str) -> None:
    # The body is what counts: valid JSON is served whatever the label, anything else is a
    # 400 naming the JSON problem.
    good = http("POST", svc.url + PREDICT, {"instances": [ONE]}, headers={"Content-Type": ctype})
    assert good.status == 200, good.body[:300]
    bad = http("POST", svc.url + PREDICT, b"--zz\r\nContent-Disposition: form-data; name=a\r\n"
               b"\r\n1\r\n--zz--\r\n", headers={"Content-Type": ctype})
    _error(bad, 400, "bad_json")


def _slow_connection(url: str, body_too: bool) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    if body_too:  # complete headers, then a body that trickles
        s.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  "Content-Length: 100000\r\n\r\n{".encode())
    else:
        s.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\n".encode())
    return s


def test_slow_clients_cannot_silence_health_checks(svc: Any, http: Any) -> None:
    slow = [_slow_connection(svc.url, body_too=i % 2 == 1) for i in range(4)]
    bound = math.ceil(len(slow) / WORKERS) * DEADLINE_S + 2.0
    t0 = time.monotonic()
    answered_after = None
    try:
        while time.monotonic() - t0 < bound + 5:
            for s in slow:  # keep dripping, slower than the deadline allows
                try:
                    s.sendall(b"X-Drip: 1\r\n" if s is slow[0] or s is slow[2] else b" ")
                except OSError:
                    pass
            try:
                r = http("GET", svc.url + "/healthz", timeout=0.5)
                if r.status == 200:
                    answered_after = time.monotonic() - t0
                    break
            except OSError:
                pass
            time.sleep(0.2)
    finally:
        for s in slow:
            s.close()
    assert answered_after is not None and answered_after <= bound, (answered_after, bound)
    # The service said why it dropped them; and still serves predictions afterwards.
    deadline = time.monotonic() + 10
    while "slow client" not in svc.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "slow client: request not received within 2.0 s" in svc.log()
    assert http("POST", svc.url + PREDICT, {"instances": [ONE]}).status == 200


# -- security defaults ---------------------------------------------------------------------

def test_admin_endpoint_is_off_by_default(svc: Any, http: Any) -> None:
    for method in ("GET", "PUT", "DELETE"):
        r = http(method, svc.url + "/admin/faults", {} if method == "PUT" else None,
                 headers={"Authorization": "Bearer anything"})
        assert r.status in (404, 405) and r.json()["error"] in ("not_found",
                                                                 "method_not_allowed")


def test_admin_token_refuses_every_near_miss(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Behaviour, through the admin blueprint itself (Flask's own test client): every
    wrong token is refused whatever its length or how much of the right one it shares,
    and the right one is accepted. Timing is not asserted: hmac.compare_digest and == on
    a 24-byte token differ by nanoseconds, and a request through WSGI varies by
    microseconds here (milliseconds through gunicorn on a busy machine), so no test of
    this suite could tell a leaking comparison from a constant-time one."""
    from flask import Flask

    from reference_service.admin import admin_blueprint
    from reference_service.faults import FaultState

    token = "s3cret-Token-0123456789"
    app = Flask("admin_test")
    app.register_blueprint(admin_blueprint(FaultState(tmp_path / "faults.json", set(),
                                                      {"fraud"}), token))
    client = app.test_client()

    def status(header: str | None) -> int:
        headers = {} if header is None else {"Authorization": header}
        return client.get("/admin/faults", headers=headers).status_code

    near = {token[:n] for n in range(len(token))}  # every prefix, the empty one included
    near |= {"x" * n for n in range(2 * len(token) + 2)}  # every length
    near |= {token + "x", token + " ", token * 2, token.upper(), token.lower(), token[::-1],
             token[1:], " " + token, token + "\x00", "é" * len(token)}
    for i in range(len(token)):  # one byte off, at every position
        near.add(token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:])
    near.discard(token)
    with caplog.at_level("WARNING", logger="reference_service.admin"):
        refused = {t: status(f"Bearer {t}") for t in sorted(near)}
        assert {t: code for t, code in refused.items() if code != 401} == {}
        # the right token in the wrong place or scheme
        for header in (None, "", token, f"Basic {token}", f"Token {token}", f"Bearer{token}"):
            assert status(header) == 401, header
    assert status(f"Bearer {token}") == 200 and status(f"bearer {token}") == 200
    refusal = client.get("/admin/faults", headers={"Authorization": "Bearer nope"})
    assert refusal.json["error"] == "unauthorized"
    assert refusal.headers["WWW-Authenticate"] == 'Bearer realm="refsvc-admin"'
    # every refusal is logged, and never with what was sent
    assert len(caplog.records) >= len(near)
    assert not [r for r in caplog.records if token[:6] in r.getMessage()]


def test_services_bind_loopback_unless_told(svc: Any) -> None:
    import psutil

    from reference_service.launch import gunicorn_command

    argv, _ = gunicorn_command(port=8000)
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:8000"
    listening = {c.laddr.ip for c in psutil.Process(svc.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}


def test_no_shell_strings_anywhere() -> None:
    pattern = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.getoutput\(")
    offenders = []
    for folder in ("harness", "reference_service", "scenarios", "benchmarks", "scripts",
                   "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == Path(__file__).name:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_dependencies_are_pinned_and_installed_from_the_constraints() -> None:
    import tomllib

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for req in wanted:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0]).lower()
        assert name in pins, f"{name} (pyproject.toml) has no pin in constraints.txt"
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q -c constraints.txt -e '.[dev]'" in makefile
    venv_rule = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "constraints.txt" in venv_rule.splitlines()[0]  # a changed pin reinstalls
    for target in ("demo:", "test:"):
        line = next(ln for ln in makefile.splitlines() if ln.startswith(target))
        assert "venv" in line, line


# -- worker recycling: the Prometheus multiprocess directory stays bounded -------------------

_WRITER = """
import os, sys
from prometheus_client import Counter, Histogram
c = Counter("soak_requests", "n", ["status"])
h = Histogram("soak_seconds", "s", buckets=(0.1, 1.0))
n = int(sys.argv[1])
c.labels("200").inc(n)
for i in range(n):
    h.observe(0.05 if i % 2 else 0.5)
"""


def test_dead_workers_metrics_fold_into_one_archive_with_totals_unchanged(
        tmp_path: Path) -> None:
    import subprocess
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    from reference_service.metrics import exposition
    from reference_service.metrics_compact import compact_dead_worker

    prom = tmp_path / "prom"
    prom.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    for n in (3, 5, 7, 11):  # four real "worker" processes, each writing its own files
        subprocess.run([sys.executable, "-c", _WRITER, str(n)], env=env, check=True)
    pids = sorted({int(f.stem.split("_")[1]) for f in prom.glob("counter_*.db")})
    assert len(pids) == 4

    def totals() -> dict[str, float]:
        old = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
        try:
            text = exposition()[0].decode()
        finally:
            if old is None:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]
            else:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = old
        return {f"{s.name}{sorted(s.labels.items())}": s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    before = totals()
    assert before["soak_requests_total[('status', '200')]"] == 26
    for pid in pids[:3]:
        assert compact_dead_worker(pid, prom) == 2
    assert totals() == before  # nothing lost, nothing counted twice
    names = sorted(f.name for f in prom.glob("*.db"))
    assert names == sorted(["counter_archive.db", "histogram_archive.db",
                            f"counter_{pids[3]}.db", f"histogram_{pids[3]}.db"])
    assert compact_dead_worker(pids[0], prom) == 0  # already folded: a no-op
