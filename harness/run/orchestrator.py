"""One run: start the target, the collectors and the load driver; stop them; summarize.

The orchestrator never imports Locust: the load driver is a subprocess
(``python -m harness.load.driver``) that speaks JSON lines on its stdout.
Whatever happens (the target dies, the user presses Ctrl-C, the driver crashes)
the run directory is left readable and marked with what happened.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import __version__
from harness.analysis.summary import summarize
from harness.run.collectors.base import Collector, CollectorContext
from harness.run.collectors.profile import ProfileCollector
from harness.run.collectors.prometheus import PrometheusCollector
from harness.run.collectors.resources import ResourcesCollector
from harness.run.environment import collect_environment
from harness.run.target import (
    ServedTarget,
    ServeOptions,
    TargetError,
    check_reachable,
    find_local_service_pid,
    is_local,
    serve_reference,
    stop_process_tree,
)
from harness.rundir import create_run_dir, write_json_atomic, write_run_json

EXIT_OK = 0
EXIT_START_FAILED = 2
EXIT_DEGRADED = 3
EXIT_INTERRUPTED = 130

Event = dict[str, Any]


class RunError(Exception):
    """The run could not start; nothing was measured (the run directory says why)."""

    def __init__(self, message: str, run_dir: Path | None = None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


@dataclass(frozen=True)
class RunOptions:
    """Everything ``harness run`` was asked to do. Checked when built."""

    scenario: Path
    target: str | None = None
    serve: str | None = None
    serve_options: ServeOptions = field(default_factory=ServeOptions)
    users: int | None = None
    spawn_rate: float | None = None
    rate: float | None = None
    rate_shape: str | None = None
    arrival: str = "poisson"
    duration_s: float = 60.0
    warmup_s: float = 0.0
    interval_s: float = 1.0
    workers: int = 0
    profile: bool = True
    profile_rate_hz: int | None = None
    profile_wall: bool = False
    pyspy: str | None = None
    stage_map: Path | None = None
    resources_hz: float = 4.0
    out: Path = Path("runs")
    tags: dict[str, str] = field(default_factory=dict)
    tag_keys: tuple[str, ...] = ("input_class",)
    user_classes: tuple[str, ...] = ()
    seed: int = 1
    late_threshold_us: int = 1000
    request_timeout_s: float = 10.0
    locust_args: tuple[str, ...] = ()
    record_traffic: bool = False
    command_line: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.scenario.is_file():
            raise ValueError(
                f"scenario must be an existing locustfile (got {str(self.scenario)!r})"
            )
        if self.scenario.suffix != ".py":
            raise ValueError(f"scenario must be a .py locustfile (got {str(self.scenario)!r})")
        if (self.target is None) == (self.serve is None):
            raise ValueError("give exactly one of --target URL or --serve reference")
        if self.serve is not None and self.serve != "reference":
            raise ValueError(f"--serve knows only 'reference' (got {self.serve!r})")
        if self.rate is not None:
            if not (self.rate > 0 and math.isfinite(self.rate)):
                raise ValueError(f"rate must be > 0 requests/s (got {self.rate!r})")
            if self.spawn_rate is not None:
                raise ValueError("--spawn-rate belongs to the closed model; with --rate omit it")
        if self.rate_shape is not None:
            from harness.load.shapes import parse_shape

            if self.rate is not None:
                raise ValueError("give --rate or --rate-shape, not both (the shape sets the rate)")
            if self.spawn_rate is not None:
                raise ValueError("--spawn-rate belongs to the closed model; with --rate-shape "
                                 "omit it")
            peak = parse_shape(self.rate_shape).peak  # ValueError names the bad part
            if not peak > 0:
                raise ValueError(f"rate shape must reach a rate > 0 (got {self.rate_shape!r})")
        if self.arrival not in ("poisson", "constant"):
            raise ValueError(f"arrival must be poisson or constant (got {self.arrival!r})")
        if self.users is not None and self.users < 1:
            raise ValueError(f"users must be >= 1 (got {self.users})")
        if self.spawn_rate is not None and not self.spawn_rate > 0:
            raise ValueError(f"spawn rate must be > 0 users/s (got {self.spawn_rate})")
        if not self.duration_s > 0:
            raise ValueError(f"duration must be > 0 s (got {self.duration_s})")
        if self.warmup_s < 0:
            raise ValueError(f"warmup must be >= 0 s (got {self.warmup_s})")
        if not 0.1 <= self.interval_s <= 60:
            raise ValueError(f"interval must be between 0.1 and 60 s (got {self.interval_s})")
        if not 0 <= self.workers <= 64:
            raise ValueError(f"workers must be between 0 and 64 (got {self.workers})")
        if not (0 < self.request_timeout_s <= 3600 and math.isfinite(self.request_timeout_s)):
            raise ValueError(f"request timeout must be > 0 and <= 3600 s "
                             f"(got {self.request_timeout_s})")
        if self.record_traffic and self.serve != "reference":
            raise ValueError("--record-traffic needs --serve reference (an external service "
                             "records its own traffic: see docs/scenarios.md)")
        if self.stage_map is not None and not self.stage_map.is_file():
            raise ValueError(f"stage map file not found (got {str(self.stage_map)!r})")
        # Collector options are checked now, not in the middle of the run.
        ResourcesCollector.from_options(self.resources_options())
        if self.profile:
            ProfileCollector.from_options(self.profile_options())

    def resources_options(self) -> dict[str, Any]:
        return {"rate_hz": self.resources_hz}

    def profile_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"wall": self.profile_wall}
        if self.profile_rate_hz is not None:
            opts["rate_hz"] = self.profile_rate_hz
        if self.pyspy is not None:
            opts["pyspy"] = self.pyspy
        if self.stage_map is not None:
            opts["stage_map"] = str(self.stage_map)
        elif self.serve == "reference":
            opts["stage_map"] = "reference_service"
        return opts

    @property
    def model(self) -> str:
        return "open" if self.rate is not None or self.rate_shape is not None else "closed"

    @property
    def peak_rate(self) -> float | None:
        if self.rate_shape is not None:
            from harness.load.shapes import parse_shape

            return float(parse_shape(self.rate_shape).peak)
        return self.rate

    def pool_users(self) -> int:
        """Users that carry the load: given, or for the open model enough for rate x 1 s."""
        if self.users is not None:
            return self.users
        peak = self.peak_rate
        if peak is not None:
            return max(10, min(2000, math.ceil(peak)))
        return 10

    def describe_load(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "users": self.pool_users(),
            "spawn_rate": self.spawn_rate if self.model == "closed" else None,
            "rate": self.peak_rate,
            "rate_shape": self.rate_shape,
            "arrival": self.arrival if self.model == "open" else None,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "interval_s": self.interval_s,
            "workers": self.workers,
            "tags": dict(self.tags),
        }


@dataclass
class RunResult:
    run_dir: Path
    status: str
    exit_code: int
    summary: dict[str, Any] | None
    messages: list[str]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag (and a graceful stop of the driver)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.driver: subprocess.Popen[bytes] | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, _frame: object) -> None:
        first = self.signal is None
        self.signal = signum
        if self.driver is not None and self.driver.poll() is None:
            # First signal: the driver stops users and flushes. Second: no more patience.
            self.driver.send_signal(signal.SIGTERM if first else signal.SIGKILL)


def run(options: RunOptions, on_event: Callable[[Event], None] | None = None) -> RunResult:
    """Run one load test; raise RunError when it could not start."""
    emit = on_event or (lambda _e: None)
    run_dir = create_run_dir(options.out, options.scenario.stem)
    meta: dict[str, Any] = {
        "harness_version": __version__,
        "status": "running",
        "command_line": list(options.command_line) or [sys.argv[0], *sys.argv[1:]],
        "scenario": {
            "path": str(options.scenario.resolve()),
            "sha256": _sha256(options.scenario),
            "user_classes": list(options.user_classes),
        },
        "target": {},
        "load": options.describe_load(),
        "timeline": {"created": time.time()},
        "environment": collect_environment(),
        "collectors": {},
        "notes": [],
    }
    write_run_json(run_dir, meta)
    emit({"type": "run_dir", "path": str(run_dir)})

    served: ServedTarget | None = None
    driver: subprocess.Popen[bytes] | None = None
    collectors: list[tuple[Collector, CollectorContext | None]] = []
    messages: list[str] = []
    load: dict[str, Any] | None = None
    with _Interrupt() as interrupt:
        try:
            served, url, service_pid = _start_target(options, run_dir, meta, emit)
            write_run_json(run_dir, meta)
            if interrupt.signal is not None:
                raise RunError("interrupted before the load started", run_dir)
            driver, load, collectors, died = _drive(
                options, run_dir, url, service_pid, served, meta, interrupt, emit
            )
            if died:
                messages.append(died)
        except (RunError, TargetError, OSError) as exc:
            meta["status"] = "failed"
            meta["notes"].append(str(exc))
            _stop_all(collectors, driver, served, meta)
            write_run_json(run_dir, meta)
            raise RunError(str(exc), run_dir) from None
        finally:
            # Reached on success too: stopping twice is harmless (each stop is idempotent).
            _stop_all(collectors, driver, served, meta)

    return _finish(options, run_dir, meta, load, interrupt.signal, messages)


def _start_target(
    options: RunOptions, run_dir: Path, meta: dict[str, Any], emit: Callable[[Event], None]
) -> tuple[ServedTarget | None, str, int | None]:
    if options.serve == "reference":
        emit({"type": "status", "message": "starting the reference service under gunicorn"})
        serve_options = options.serve_options
        if options.record_traffic:
            # The service records what it received into the run directory (replay format).
            serve_options = replace(serve_options, record_traffic=str(run_dir / "traffic"))
        served = serve_reference(serve_options, run_dir / "service.log")
        meta["target"] = {
            "url": served.url,
            "served_by_harness": True,
            "service": "reference",
            "service_options": serve_options.describe(),
            "startup_s": round(served.startup_s, 3),
        }
        meta["target"].update(_model_versions(served.url))
        return served, served.url, served.pid
    assert options.target is not None
    url = options.target.rstrip("/")
    check_reachable(url)
    pid = find_local_service_pid(url) if is_local(url) else None
    meta["target"] = {"url": url, "served_by_harness": False, "local_pid": pid}
    meta["target"].update(_model_versions(url))
    if pid is None:
        meta["notes"].append(
            "target is not a local process the harness can see: service CPU, memory and "
            "profile are not collected"
        )
    return None, url, pid


def _model_versions(url: str) -> dict[str, Any]:
    """The model names and versions a service reports at /v1/models, when it has that endpoint."""
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/v1/models", timeout=3.0) as resp:
            body = json.loads(resp.read(1_000_000))
    except (OSError, ValueError):
        return {}
    models = body.get("models") if isinstance(body, dict) else None
    if isinstance(models, dict):  # {name: {...}} (the reference service's form)
        models = [{"name": k, **v} for k, v in models.items() if isinstance(v, dict)]
    if not isinstance(models, list):
        return {}
    found = {}
    for m in models:
        if isinstance(m, dict) and "name" in m:
            versions = m.get("versions")
            found[str(m["name"])] = {
                "versions": sorted(versions) if isinstance(versions, (dict, list)) else None,
                "default_version": m.get("default_version"),
            }
    return {"models": found}


def _driver_config(options: RunOptions, run_dir: Path, url: str) -> dict[str, Any]:
    return {
        "locustfile": str(options.scenario.resolve()),
        "host": url,
        "run_dir": str(run_dir),
        "model": options.model,
        "users": options.pool_users(),
        "spawn_rate": options.spawn_rate or float(options.pool_users()),
        "rate": options.peak_rate,
        "rate_shape": options.rate_shape,
        "arrival": options.arrival,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "interval_s": options.interval_s,
        "workers": options.workers,
        "tag_keys": list(options.tag_keys),
        "seed": options.seed,
        "user_classes": list(options.user_classes),
        "late_threshold_us": options.late_threshold_us,
        "request_timeout_s": options.request_timeout_s,
        "master_host": "127.0.0.1",
        "master_port": 0,
        "expect_workers_timeout_s": 30,
        "locust_args": list(options.locust_args),
    }


def _drive(
    options: RunOptions,
    run_dir: Path,
    url: str,
    service_pid: int | None,
    served: ServedTarget | None,
    meta: dict[str, Any],
    interrupt: _Interrupt,
    emit: Callable[[Event], None],
) -> tuple[subprocess.Popen[bytes], dict[str, Any] | None, list[Any], str | None]:
    config = _driver_config(options, run_dir, url)
    write_json_atomic(run_dir / "driver.json", config)
    driver_log = open(run_dir / "driver.log", "ab")  # noqa: SIM115 - closed below
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness.load.driver", str(run_dir / "driver.json")],
        stdout=subprocess.PIPE,
        stderr=driver_log,
        start_new_session=True,
    )
    interrupt.driver = driver
    collectors: list[tuple[Collector, CollectorContext | None]] = []
    planned_end = time.time() + options.warmup_s + options.duration_s
    early_ctx = CollectorContext(
        run_dir=run_dir,
        service_pid=service_pid,
        loadgen_pid=driver.pid,
        measure_start=time.time() + options.warmup_s,
        measure_end=planned_end,
        options=options.resources_options(),
    )
    resources = ResourcesCollector()  # start() applies the context's options, checked above
    resources.start(early_ctx)
    collectors.append((resources, early_ctx))

    load: dict[str, Any] | None = None
    died: str | None = None
    assert driver.stdout is not None
    for raw in driver.stdout:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        kind = event.get("type")
        if kind == "started":
            load_start = float(event["load_start"])
            measure_start = load_start + options.warmup_s
            measure_end = measure_start + options.duration_s
            meta["timeline"].update(
                load_start=load_start,
                measure_start=measure_start,
                planned_load_end=measure_end,
            )
            write_run_json(run_dir, meta)
            if options.profile:
                # With no local service pid the collector records why there is no profile.
                profile = ProfileCollector()  # start() applies ctx.options
                ctx = CollectorContext(
                    run_dir=run_dir,
                    service_pid=service_pid,
                    loadgen_pid=driver.pid,
                    measure_start=measure_start,
                    measure_end=measure_end,
                    options=options.profile_options(),
                )
                profile.start(ctx)
                collectors.append((profile, ctx))
                resources.watch(profile.pids)
            # /metrics at the window's start and end: prediction shift and missing features.
            scraper = PrometheusCollector(url.rstrip("/") + "/metrics")
            scraper.start(CollectorContext(run_dir=run_dir, service_pid=service_pid,
                                           loadgen_pid=driver.pid, measure_start=measure_start,
                                           measure_end=measure_end, options={}))
            collectors.append((scraper, None))
            emit({"type": "started", "load_start": load_start, "options": options.describe_load()})
        elif kind == "interval":
            if served is not None and not served.alive() and died is None:
                died = (
                    f"the reference service exited (code {served.process.returncode}) "
                    "during the run; see service.log"
                )
                meta["notes"].append(died)
                emit({"type": "status", "message": died})
            emit(event)
        elif kind == "done":
            load = event.get("load")
    code = driver.wait()
    driver_log.close()
    meta["timeline"]["load_end"] = time.time()
    meta["driver_exit_code"] = code
    if code == 2:
        raise RunError(f"the locustfile could not be used: {_last_line(run_dir / 'driver.log')}")
    if code != 0 and load is None:
        if interrupt.signal is None:
            raise RunError(
                f"the load driver failed (exit code {code}): {_last_line(run_dir / 'driver.log')}"
            )
    if served is not None and not served.alive() and died is None:
        died = f"the reference service exited (code {served.process.returncode}) during the run"
        meta["notes"].append(died)
    return driver, load, collectors, died


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no driver.log)"
    return lines[-1] if lines else "(driver.log is empty)"


def _stop_all(
    collectors: list[tuple[Collector, CollectorContext | None]],
    driver: subprocess.Popen[bytes] | None,
    served: ServedTarget | None,
    meta: dict[str, Any],
) -> None:
    if driver is not None and driver.poll() is None:
        stop_process_tree(driver, timeout_s=15.0)
    for collector, _ctx in reversed(collectors):
        try:
            meta["collectors"][collector.name] = collector.stop()
        except Exception as exc:  # a collector must never cost the run its data
            meta["collectors"][collector.name] = {"ok": False, "reason": f"stop failed: {exc!r}"}
    collectors.clear()
    if served is not None and served.process.returncode is None:
        served.stop()
        meta["target"]["stopped"] = True


def _finish(
    options: RunOptions,
    run_dir: Path,
    meta: dict[str, Any],
    load: dict[str, Any] | None,
    signum: int | None,
    messages: list[str],
) -> RunResult:
    summary: dict[str, Any] | None = None
    try:
        summary = summarize(run_dir, write=False)
    except Exception as exc:  # the measurements stay on disk even if summarizing fails
        messages.append(f"summary could not be computed: {exc}")
        meta["notes"].append(f"summary failed: {exc!r}")
    failed_checks = [
        c for c in (summary or {}).get("self_check", [])
        if not c.get("ok") and c.get("severity") == "error"
    ]
    if signum is not None or (load or {}).get("stopped_early"):
        status, code = "incomplete", EXIT_INTERRUPTED
        messages.append(
            f"interrupted (signal {signum}): the run directory holds what was measured"
        )
    elif messages or failed_checks or load is None:
        status, code = "degraded", EXIT_DEGRADED
        for c in failed_checks:
            messages.append(f"self-check {c.get('check')}: {c.get('detail')}")
        if load is None:
            messages.append("the load driver ended without a final report")
    else:
        status, code = "complete", EXIT_OK
    meta["status"] = status
    write_run_json(run_dir, meta)
    if summary is not None:
        summary["status"] = status
        write_json_atomic(run_dir / "summary.json", summary)
    return RunResult(run_dir=run_dir, status=status, exit_code=code, summary=summary,
                     messages=messages)

