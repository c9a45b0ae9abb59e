"""The collector registry: a collector added in-process (a real one that writes a file) is
started, stopped and recorded by the orchestrator, which is not edited for it; its options
are checked when RunOptions is built; its flags reach `harness run`.

The toy collectors below are what a new collector's module holds (docs/collectors.md,
"Adding a collector"): options, a collector, a CollectorSpec.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.run import RunOptions, run
from harness.run.collectors import registry
from harness.run.collectors.base import CollectorContext, CollectorSpec
from harness.run.collectors.lifecycle import RunCollectors

sys.path.insert(0, str(Path(__file__).parent))
from known_latency_server import start_subprocess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = """
from locust import HttpUser, constant, task

class Predict(HttpUser):
    wait_time = constant(0.05)

    @task
    def predict(self):
        self.client.get("/predict", name="predict")
"""


@dataclass(frozen=True)
class ToyOptions:
    level: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not isinstance(self.level, int) \
                or not 1 <= self.level <= 9:
            raise ValueError(f"toy level must be an integer between 1 and 9 (got {self.level!r})")


class ToyCollector:
    """Appends what it was told and when to RUN_DIR/toy.jsonl (one line per event)."""

    def __init__(self, name: str, opts: ToyOptions, stop_s: float = 0.0) -> None:
        self.name, self.opts, self.stop_s = name, opts, stop_s
        self.ctx: CollectorContext | None = None
        self.status: dict[str, Any] | None = None

    def _log(self, event: str, **fields: Any) -> None:
        assert self.ctx is not None
        with (self.ctx.run_dir / "toy.jsonl").open("a") as fh:
            fh.write(json.dumps({"collector": self.name, "event": event, "t": time.time(),
                                 **fields}) + "\n")

    def start(self, ctx: CollectorContext) -> None:
        self.ctx = ctx
        self._log("start", level=self.opts.level, target_url=ctx.target_url,
                  workers=ctx.workers, load_start=ctx.load_start, loadgen_pid=ctx.loadgen_pid,
                  measure_start=ctx.measure_start, measure_end=ctx.measure_end,
                  options=dict(ctx.options))

    def stop(self) -> dict[str, Any]:
        if self.status is None:
            time.sleep(self.stop_s)
            if self.ctx is not None:
                self._log("stop")
            self.status = {"ok": self.ctx is not None, "level": self.opts.level}
        return self.status


def _toy_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--toy-level", type=int, default=1, help="how much toy (1-9)")
    group.add_argument("--no-toy", action="store_true", help="turn the toy collector off")


def _toy_from_args(args: argparse.Namespace) -> ToyOptions | None:
    return None if args.no_toy else ToyOptions(level=args.toy_level)


def _spec(name: str, at: str, **kw: Any) -> CollectorSpec[ToyOptions]:
    stop_s = kw.pop("stop_s", 0.0)
    return CollectorSpec(name=name, at=at, options=ToyOptions,
                         create=lambda opts, _ctx: ToyCollector(name, opts, stop_s), **kw)


@pytest.fixture
def toys() -> Iterator[None]:
    registry.register(_spec("toy_process", "process"))
    registry.register(_spec("toy", "load", add_flags=_toy_flags, from_args=_toy_from_args,
                            title="toy collector"))
    try:
        yield
    finally:
        registry.unregister("toy")
        registry.unregister("toy_process")


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "toy.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_registered_collector_is_started_stopped_and_recorded(toys: None,
                                                                tmp_path: Path) -> None:
    proc, port = start_subprocess([])
    url = f"http://127.0.0.1:{port}"
    scenario = tmp_path / "scenario.py"
    scenario.write_text(LOCUSTFILE)
    try:
        options = RunOptions(scenario=scenario, target=url, users=2, duration_s=2.0,
                             out=tmp_path / "runs",
                             collectors={"profile": None, "toy": {"level": 3}})
        result = run(options)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    meta = json.loads((result.run_dir / "run.json").read_text())
    timeline = meta["timeline"]
    # reverse start order: load collectors (toy last registered), then process ones
    # (process_metrics: a remote target's process_*, idle for this local one)
    assert list(meta["collectors"]) == ["toy", "prometheus", "toy_process", "process_metrics",
                                        "resources"]
    assert meta["collectors"]["toy"] == {"ok": True, "level": 3}
    assert meta["collectors"]["toy_process"] == {"ok": True, "level": 1}
    events = _events(result.run_dir)
    assert [(e["collector"], e["event"]) for e in events] == [
        ("toy_process", "start"), ("toy", "start"), ("toy", "stop"), ("toy_process", "stop")]
    early, late = events[0], events[1]
    # at="process": with the driver process, before the load's start is known
    assert early["load_start"] is None and early["loadgen_pid"] is not None
    assert early["t"] < timeline["load_start"] + 0.5
    # at="load": at the driver's started event, with the run's timeline and target
    assert late["load_start"] == timeline["load_start"]
    assert late["measure_start"] == timeline["measure_start"]
    assert late["measure_end"] == timeline["planned_load_end"]
    assert late["target_url"] == url and late["workers"] == 0
    assert late["options"] == {"level": 3} and late["loadgen_pid"] == early["loadgen_pid"]
    # stopped after the load ended, before the run's status was decided
    assert events[2]["t"] >= timeline["load_end"]
    assert meta["status"] in ("complete", "degraded")


def test_collectors_stop_in_reverse_order_and_failures_are_recorded(tmp_path: Path) -> None:
    def broken(_opts: ToyOptions, _ctx: CollectorContext) -> ToyCollector:
        raise RuntimeError("no toy today")

    specs = [_spec("toy_a", "load"), _spec("toy_slow", "load", stop_s=2.0, stop_timeout_s=0.2),
             CollectorSpec(name="toy_broken", at="load", options=ToyOptions, create=broken),
             _spec("toy_b", "load")]
    for spec in specs:
        registry.register(spec)
    try:
        plan = registry.resolve({"profile": None, "prometheus": None, "resources": None,
                                  "process_metrics": None})
        collectors = RunCollectors(plan, run_dir=tmp_path, service_pid=None,
                                   target_url="http://127.0.0.1:9", workers=2)
        assert collectors.start("process", loadgen_pid=None, measure_start=1.0,
                                measure_end=2.0) == []
        started = collectors.start("load", loadgen_pid=None, measure_start=1.0,
                                   measure_end=2.0, load_start=1.0)
        assert started == ["toy_a", "toy_slow", "toy_b"]
        began = time.monotonic()
        statuses = collectors.stop()
        assert time.monotonic() - began < 1.5  # the slow stop was not waited for
    finally:
        for spec in specs:
            registry.unregister(spec.name)
    assert list(statuses) == ["toy_broken", "toy_b", "toy_slow", "toy_a"]
    assert statuses["toy_broken"] == {"ok": False,
                                      "reason": "start failed: RuntimeError: no toy today"}
    assert statuses["toy_slow"]["ok"] is False
    assert "did not return within 0.2 s" in statuses["toy_slow"]["reason"]
    assert statuses["toy_a"] == statuses["toy_b"] == {"ok": True, "level": 1}
    stops = [e["collector"] for e in _events(tmp_path) if e["event"] == "stop"]
    assert stops == ["toy_b", "toy_a"]
    assert collectors.stop() == {}  # each collector is stopped once


def test_run_options_check_collector_options(toys: None, tmp_path: Path) -> None:
    scenario = tmp_path / "s.py"
    scenario.write_text(LOCUSTFILE)

    def options(collectors: dict[str, Any]) -> RunOptions:
        return RunOptions(scenario=scenario, target="http://127.0.0.1:9", collectors=collectors)

    resolved = options({"toy": {"level": 4}, "profile": False}).collectors
    assert resolved["toy"] == ToyOptions(4) and resolved["toy_process"] == ToyOptions(1)
    assert resolved["profile"] is None and resolved["resources"] is not None
    assert options({"toy": None}).collectors["toy"] is None
    with pytest.raises(ValueError, match=r"toy level must be an integer between 1 and 9 "
                                         r"\(got 0\)"):
        options({"toy": {"level": 0}})
    with pytest.raises(ValueError, match=r"unknown toy options \['lvl'\]"):
        options({"toy": {"lvl": 2}})
    with pytest.raises(ValueError, match=r"collectors must name registered collectors .*"
                                         r"\(got \['nope'\]\)"):
        options({"nope": True})
    with pytest.raises(ValueError, match="profile rate_hz must be between 1 and 1000"):
        options({"profile": {"rate_hz": 0}})
    with pytest.raises(ValueError, match="collector name must be unique"):
        registry.register(_spec("toy", "load"))
    with pytest.raises(ValueError, match="collector at must be one of"):
        _spec("toy2", "later")


def test_a_collectors_flags_reach_harness_run(toys: None) -> None:
    from harness.cli import build_parser

    parser, _ = build_parser()
    base = ["run", "x.py", "--target", "http://127.0.0.1:9"]
    args = parser.parse_args([*base, "--toy-level", "5", "--no-profile"])
    opts = registry.options_from_args(args)
    assert opts["toy"] == ToyOptions(5) and opts["profile"] is None
    assert registry.options_from_args(parser.parse_args([*base, "--no-toy"]))["toy"] is None
    defaults = registry.options_from_args(parser.parse_args(base))
    assert defaults["resources"].rate_hz == 4.0 and defaults["profile"].rate_hz is None
    assert "toy collector" in parser._subparsers._group_actions[0].choices["run"].format_help()


def test_building_the_cli_imports_no_collector() -> None:
    # every harness command builds every parser: the collectors' imports (psutil, the run
    # directory's jsonschema and numpy) wait until `harness run` parses its flags
    code = ("import sys; from harness.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith('harness.run.collectors.') "
            "or m in ('psutil', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
