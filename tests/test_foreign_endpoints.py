"""What the harness reads from a model server besides its answers, against real server
processes shaped as MLServer 1.7 (tests/v2_model_server.py): the model versions (/v1/models,
else the V2 repository index and model metadata; bounded in time and size) and the
Prometheus metrics (TARGET/metrics, or --metrics-url; a scrape that failed says so as
information)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_rules_engine import _context

from harness.analysis.selfcheck import sources as selfcheck
from harness.run.collectors import prometheus, registry
from harness.run.collectors.base import CollectorContext
from harness.run.collectors.prometheus import SPEC, PrometheusOptions
from harness.run.modelversions import DEADLINE_S, model_versions
from harness.rundir.records import ScrapeStatus

SERVER = Path(__file__).resolve().parent / "v2_model_server.py"


@contextmanager
def server(mode: str) -> Iterator[tuple[str, str]]:
    """(base URL, metrics URL on the second port) of a running tests/v2_model_server.py."""
    proc = subprocess.Popen([sys.executable, str(SERVER), "--mode", mode],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port, metrics_port = proc.stdout.readline().split()
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        proc.kill()
        proc.wait()


def timed(url: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    found = model_versions(url)
    return found, time.monotonic() - t0


def test_v2_repository_index_and_metadata_when_v1_is_absent() -> None:
    with server("v2") as (url, _):
        found, _ = timed(url)
    assert found == {"models_source": "/v2/repository/index", "models": {
        "rf": {"versions": ["v0", "v1"], "default_version": None, "states": {"v1": "READY"},
               "platform": "sklearn"},
        "lr": {"versions": ["2"], "default_version": None, "states": {"2": "UNAVAILABLE"}}}}


def test_v1_models_first() -> None:
    with server("v1") as (url, _):
        found, _ = timed(url + "/")
    assert found == {"models_source": "/v1/models", "models": {
        "fraud": {"versions": ["v1", "v2"], "default_version": "v2"}}}


@pytest.mark.parametrize("mode", ["slow", "drip", "huge"])
def test_a_hostile_target_costs_at_most_the_deadline(mode: str) -> None:
    """30 s before any answer, a body dripped a byte every 0.5 s, 2 MB: nothing is
    recorded, and the start of the run waits at most the 3 s deadline."""
    with server(mode) as (url, _):
        found, took = timed(url)
    assert found == {}
    assert took < DEADLINE_S + 0.5
    with server("v2") as (url, _):
        pass
    assert timed(url) == ({}, pytest.approx(0, abs=1.0))  # nothing listening


def test_metrics_url_flag_reaches_the_collector() -> None:
    from harness.cli import build_parser

    parser, _ = build_parser()
    base = ["run", "x.py", "--target", "http://127.0.0.1:9"]
    opts = registry.options_from_args(parser.parse_args(
        [*base, "--metrics-url", "http://127.0.0.1:8082/metrics"]))
    assert opts["prometheus"] == PrometheusOptions(url="http://127.0.0.1:8082/metrics")
    assert registry.options_from_args(parser.parse_args(base))["prometheus"] == \
        PrometheusOptions()
    with pytest.raises(ValueError, match=r"metrics url \(--metrics-url\) must be an http\(s\) "
                                         r"URL \(got '127.0.0.1:8082'\)"):
        registry.options_from_args(parser.parse_args([*base, "--metrics-url", "127.0.0.1:8082"]))


def _scrape(run_dir: Path, target: str, url: str | None) -> dict:
    run_dir.mkdir()
    now = time.time()
    ctx = CollectorContext(run_dir, None, None, now, now + 0.3, target_url=target)
    collector = SPEC.create(PrometheusOptions(url=url), ctx)
    collector.start(ctx)
    time.sleep(0.4)
    return collector.stop()


def test_metrics_on_their_own_port(tmp_path: Path) -> None:
    """MLServer's shape: 404 at TARGET/metrics, the exposition on the metrics port."""
    with server("v2") as (url, metrics_url):
        missed = _scrape(tmp_path / "default", url, None)
        got = _scrape(tmp_path / "given", url, metrics_url)
    assert missed["ok"] is False and missed["scrapes"] == 0
    assert missed["failure"] == f"HTTP 404 at {url}/metrics"
    assert json.loads((tmp_path / "default" / "metrics" / "status.json").read_text()) == missed
    assert got["ok"] is True and got["url"] == metrics_url and got["scrapes"] == 2
    assert "model_infer_request_success_total" in \
        (tmp_path / "given" / "metrics" / "end.prom").read_text()
    # the self-check says it as information: no number of the run depends on it
    c = dataclasses.replace(_context(), metrics=ScrapeStatus.from_dict(missed))
    entry = selfcheck.metrics(c)
    assert entry is not None and entry.to_dict() == {
        "check": "metrics", "ok": False, "severity": "info",
        "detail": f"not scraped (HTTP 404 at {url}/metrics); a service that serves them "
                  "elsewhere: --metrics-url URL"}
    ok = selfcheck.metrics(dataclasses.replace(c, metrics=ScrapeStatus.from_dict(got)))
    assert ok is not None and ok.ok and ok.detail == f"scraped 2 times at {metrics_url}"
    assert selfcheck.metrics(_context()) is None  # the collector did not run


def test_an_oversize_exposition_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setattr(prometheus, "MAX_BODY_BYTES", 100)
    with server("v2") as (url, metrics_url):
        status = _scrape(tmp_path / "big", url, metrics_url)
    assert status["ok"] is False
    assert status["failure"] == f"a body over 100 bytes at {metrics_url}"
