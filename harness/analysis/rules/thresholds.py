"""Every threshold of the self-check and the diagnosis rules, with its value and its reason.

One table, so a number is defined once and its reason sits beside it. The module-level
names are the values the rules use; ``THRESHOLDS`` holds the same entries with unit and
reason (``harness.analysis.rules.thresholds.THRESHOLDS["BUSY_SATURATED"].reason``).
Calibration runs behind the reasons: docs/diagnose.md; the self-check's: docs/run-directory.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from harness.stats import drift

__all__ = ["THRESHOLDS", "Threshold"]

V = TypeVar("V", float, int, dict[str, float])


@dataclass(frozen=True)
class Threshold:
    """A threshold: its value, its unit and why it is where it is."""

    name: str
    value: float | int | dict[str, float]
    unit: str
    reason: str


THRESHOLDS: dict[str, Threshold] = {}


def _t(name: str, value: V, unit: str, reason: str) -> V:
    if name in THRESHOLDS:
        raise ValueError(f"threshold {name!r} is defined twice")
    THRESHOLDS[name] = Threshold(name, value, unit, reason)
    return value


# -- the load generator and the schedule (self-check and the measurement layer) ------------
LOADGEN_SATURATED_PCT = _t(
    "LOADGEN_SATURATED_PCT", 90.0, "% of one core",
    "the load driver is one gevent loop per process: it saturates at one core, and its own "
    "queueing then shows as latency (Locust warns at 90 % too)")
LOADGEN_SATURATED_SHARE = _t(
    "LOADGEN_SATURATED_SHARE", 0.10, "share of samples",
    "a few samples above 90 % are start-up or a GC pause; in more than 10 % of the window "
    "the driver was late on its own schedule")
RATE_SHORTFALL = _t(
    "RATE_SHORTFALL", 0.95, "achieved / target rate",
    "Poisson arrivals over a short window miss the nominal rate by a few percent; below "
    "95 % the load that was asked for was not applied")
SCHEDULE_DELAY_SHARE = _t(
    "SCHEDULE_DELAY_SHARE", 0.10, "share of the mean corrected latency",
    "late starts are charged to the service by the corrected latency: that matters when "
    "the delay is a visible part of it, not when a few starts slip by 1 ms")
LATE_WARNING = _t(
    "LATE_WARNING", 0.01, "share of started requests",
    "more than 1 % of starts after the late threshold: the schedule was not kept")
LOOP_LATE_SHARE = _t(
    "LOOP_LATE_SHARE", 0.10, "share of the mean corrected latency",
    "the load generator's own lateness (its loop woke late: busy, short of CPU, a timer's "
    "~1 ms resolution) is added to the corrected latency by the harness itself; above 10 % "
    "of it the corrected numbers are the harness's as much as the service's")
TRACES_JOINED_SHARE = _t(
    "TRACES_JOINED_SHARE", 0.99, "share of traced requests",
    "exporters drop spans under pressure and services may not continue every context: "
    "below 99 % joined, the trace-derived stages describe a sample of the requests")
DROPPED_ERROR = _t(
    "DROPPED_ERROR", 0.01, "share of scheduled requests",
    "requests that never started are load that was not applied; above 1 % the rate is wrong")
# -- the run itself (self-check) -------------------------------------------------------------
RUN_COMPLETE_SHARE = _t(
    "RUN_COMPLETE_SHARE", 0.90, "measured / planned duration",
    "a window 10 % shorter than planned means the load stopped early or started late")
NEGATIVE_RESIDUAL_ERROR = _t(
    "NEGATIVE_RESIDUAL_ERROR", 0.01, "share of requests",
    "a service time above the client time is a wrong Server-Timing or clock; a few are "
    "rounding, above 1 % the stage breakdown is not to be trusted")
TRANSPORT_ERROR_SHARE = _t(
    "TRANSPORT_ERROR_SHARE", 0.001, "share of requests",
    "requests with no HTTP answer are left out of the percentiles: beyond a trace (0.1 %) "
    "the percentiles describe the survivors")
CONTENTION_SYSTEM_PCT = _t(
    "CONTENTION_SYSTEM_PCT", 90.0, "% of all cores (mean)",
    "the self-check warns when the machine had no spare CPU at all; the diagnosis judges "
    "contention from 85 % with the other processes' share (MACHINE_SYSTEM_PCT)")
PROFILE_ERRORS = _t(
    "PROFILE_ERRORS", 0.01, "share of samples",
    "a few sampling errors are normal (a frame read mid-update); many mean a bad profile")
PROFILE_ERRORS_NONBLOCKING = _t(
    "PROFILE_ERRORS_NONBLOCKING", 0.15, "errors / samples",
    "py-spy --nonblocking drops a stack that changes while it reads it: 1.6-11.7 % of the "
    "reads in 32 runs of the reference service, the FastAPI example and MLServer (BENCHMARKS.md), "
    "with stage shares within 2 points of the blocking mode's on the reference service and "
    "3.3 on the FastAPI one; beyond 15 % the drop may bias the shares against the code "
    "whose stacks change fastest")
PROFILE_LAG_S = _t(
    "PROFILE_LAG_S", 1.0, "s",
    "py-spy more than a second behind its schedule samples a different moment than it says")
PROFILE_PAUSED_SHARE = _t(
    "PROFILE_PAUSED_SHARE", 0.05, "share of the sampled span",
    "py-spy in blocking mode stops the process while it reads the stacks: held stopped "
    "for more than 5 % of the window (an upper bound from py-spy's busy time), the "
    "service's requests were slowed by up to as much; MLServer's main process: 26 %")
# -- the machine and the service (infrastructure layer) ---------------------------------------
MACHINE_SYSTEM_PCT = _t(
    "MACHINE_SYSTEM_PCT", 85.0, "% of all cores (mean)",
    "from here the run queue is rarely empty on 2 shared cores: stages wait for a CPU")
MACHINE_OTHER_SHARE = _t(
    "MACHINE_OTHER_SHARE", 0.20, "share of the machine",
    "other processes taking a fifth of a busy machine starve the service and the load "
    "generator: absolute latencies are the machine's, not the service's")
BUSY_SATURATED = _t(
    "BUSY_SATURATED", 0.85, "utilization (rate x service time / slots)",
    "at 85 % busy, arrivals find every worker taken often enough that the queue dominates "
    "(the calibration's saturated runs: 85-92 %)")
WORKER_CPU_SATURATED = _t(
    "WORKER_CPU_SATURATED", 85.0, "% of one core (mean)",
    "a single-threaded worker using 85 % of a core is CPU-bound; below, it also waits")
SERVICE_CPU_SATURATED = _t(
    "SERVICE_CPU_SATURATED", 0.90, "service tree CPU / all cores",
    "the service uses (nearly) every core: more workers cannot help")
MACHINE_SERVICE_CRITICAL = _t(
    "MACHINE_SERVICE_CRITICAL", SERVICE_CPU_SATURATED * 0.9, "service share of the machine",
    "a machine saturated by the service itself (>= 81 %, 90 % of SERVICE_CPU_SATURATED) is "
    "critical: more load cannot be served; less is the load generator's doing")
IMBALANCE_SHARE = _t(
    "IMBALANCE_SHARE", 0.70, "busiest worker's share of all workers' CPU",
    "with 2 workers an even split is 50 %; 70 % means one worker gets most connections")
IMBALANCE_MIN_CPU = _t(
    "IMBALANCE_MIN_CPU", 50.0, "% of one core, all workers",
    "an idle service's split is noise: judged only once the workers use half a core")
RSS_GROWTH_BYTES = _t(
    "RSS_GROWTH_BYTES", 20 * 2**20, "bytes over the window",
    "model loading and allocator warm-up move RSS by a few MiB; 20 MiB is growth")
RSS_GROWTH_FRACTION = _t(
    "RSS_GROWTH_FRACTION", 0.05, "of the starting RSS",
    "a large service grows by 20 MiB in noise; growth must also be 5 % of its size")
RSS_FIT_R2 = _t(
    "RSS_FIT_R2", 0.7, "r² of the least-squares line",
    "a steady leak is a line; a step (a cache filled once) fits one badly")
RESIDUAL_INFO = _t(
    "RESIDUAL_INFO", 0.30, "share of the client time",
    "time outside the service's own timing worth naming (queueing, WSGI, network)")
RESIDUAL_WARNING = _t(
    "RESIDUAL_WARNING", 0.50, "share of the client time",
    "half the latency queueing is a warning when the workers are busy (RESIDUAL_BUSY) on a "
    "machine that is not contended")
RESIDUAL_BUSY = _t(
    "RESIDUAL_BUSY", 0.60, "utilization",
    "below 60 % busy the queue comes from bursts, not from too few workers")
UNATTRIBUTED_WARNING = _t(
    "UNATTRIBUTED_WARNING", 0.30, "share of the client time",
    "time inside the service (app) in no named stage: framework, locks, GC")
UNATTRIBUTED_TRACES_WARNING = _t(
    "UNATTRIBUTED_TRACES_WARNING", 0.60, "share of the client time",
    "a trace's server span covers the framework's own work (routing, request validation, "
    "middleware, the response's send), which Server-Timing's app total usually leaves out: "
    "the clean FastAPI example has 36-41 % of its client time there on a contended "
    "machine; a 30 ms blocking call outside the child spans puts 63 % there")
# -- stages (upstream, model, serialization layers) -------------------------------------------
STAGE_WARNING = _t(
    "STAGE_WARNING", {"upstream": 0.30, "serialization": 0.10, "infrastructure": 0.30},
    "share of the service time",
    "a feature fetch taking 30 % of the service time, or serialization 10 %, is worth "
    "acting on; judged against the service time (app), which queueing does not inflate")
STAGE_INFO = _t(
    "STAGE_INFO", {"upstream": 0.10, "serialization": 0.03, "infrastructure": 0.10,
                   "model": 0.30},
    "share of the service time",
    "where the time goes, for the record (inference is normally most of it)")
STAGE_ASYNC_CONTENDED = _t(
    "STAGE_ASYNC_CONTENDED", 0.50, "share of the service time",
    "an async service's awaited stage (a store call) on a CPU-contended machine includes the "
    "wait for its starved event loop to resume it: the clean FastAPI example's fetch span "
    "was 35-41 % of its server span with other processes at 90 % of the machine (and its "
    "v2-model runs 30-44 %), a 20 ms slower store 77-86 %; below half of the service time "
    "it is not the store's alone")
TAIL_RATIO = _t(
    "TAIL_RATIO", 5.0, "stage p99 / p50",
    "a stage whose p99 is 5x its median has a tail of its own, not just noise")
TAIL_OF_CLIENT = _t(
    "TAIL_OF_CLIENT", 0.30, "stage p99 / client p99",
    "only a stage tail that is a visible part of the client's tail")
TAIL_MIN_US = _t(
    "TAIL_MIN_US", 1000, "µs (p99 - p50)",
    "a 5x tail of a 50 µs stage is 200 µs: not worth a finding")
TAIL_BURST_SHARE = _t(
    "TAIL_BURST_SHARE", 0.5, "share of the stage's values above p99",
    "the tail sits in CPU bursts when at least half of it fell in busy seconds ...")
TAIL_BURST_CONCENTRATION = _t(
    "TAIL_BURST_CONCENTRATION", 2.0, "tail share / share of all values",
    "... and the tail is at least twice as concentrated there as the stage's values are "
    "(bursts that hold as many values as tail explain nothing)")
TAIL_BURST_MIN_VALUES = _t(
    "TAIL_BURST_MIN_VALUES", 5, "values above p99",
    "fewer tail values than this cannot show where the tail sits")
ONCPU_COMPUTE = _t(
    "ONCPU_COMPUTE", 0.6, "on-CPU / wall seconds",
    "a stage on-CPU 60 % of its wall time computes (py-spy's sampling misses some)")
ONCPU_WAITING = _t(
    "ONCPU_WAITING", 0.3, "on-CPU / wall seconds",
    "on-CPU 30 % or less: mostly waiting (I/O, a lock, the GIL, or a CPU it does not get)")
ONCPU_MIN_SAMPLES = _t(
    "ONCPU_MIN_SAMPLES", 10, "expected profile samples (stage wall seconds x rate)",
    "with fewer the ratio is noise: a computing stage expected to get 1 sample (0.05 s of "
    "it at 20 Hz) got 0, read as waiting, 37 % of the time")
# -- a service without Server-Timing: processes, event loop, profile, client tail ------------
IDLE_PROCESS_PCT = _t(
    "IDLE_PROCESS_PCT", 1.0, "% of one core (mean over the window)",
    "a process of the service that used less than 1 % of a core while the load ran serves no "
    "requests: multiprocessing's resource tracker (0.0-0.08 % in the MLServer runs), a "
    "forkserver, a supervisor; it is not a worker to balance or to count as a request slot")
LOOP_BUSY_SATURATED = _t(
    "LOOP_BUSY_SATURATED", 0.85, "share of the event loop's samples running a callback",
    "the loop thread of an async service is one request slot for CPU work: busy (running "
    "or runnable) 85 % of the time, as BUSY_SATURATED for workers, arrivals find it taken "
    "and wait. FastAPI example at 20 req/s per worker, other processes at 90 % of 2 cores: "
    "clean 8-31 %; v2 model, a slow encoder or one worker for the load: 79-100 %; MLServer "
    "with parallel workers off, 8 users: 91-97 %")
LOOP_BLOCKED_WARNING = _t(
    "LOOP_BLOCKED_WARNING", 0.15, "share of the event loop's wall samples",
    "samples of the loop thread inside a callback in the wall view but not on-CPU: the loop "
    "sleeps in a synchronous call (time.sleep, a sync client's socket read) and serves "
    "nothing meanwhile. Clean FastAPI and MLServer runs on a contended 2-core machine: "
    "0-8 %; a 30 ms time.sleep per request: 85 % (one worker, 27 req/s), 57-63 % (two "
    "workers, 20 req/s each)")
LOOP_BLOCKED_CRITICAL = _t(
    "LOOP_BLOCKED_CRITICAL", 0.5, "share of the event loop's wall samples",
    "a loop blocked half of the time makes every request queue behind the blocking calls: "
    "it decides the latency, as a saturated service does")
LOOP_OFFCPU_RATIO = _t(
    "LOOP_OFFCPU_RATIO", 0.3, "on-CPU / wall samples of one callback frame",
    "a callback frame the on-CPU view sees in at most 30 % of its wall samples sleeps there "
    "(a time.sleep line: 9 of 127); computing frames on a contended machine lose some "
    "on-CPU samples too, spread over every frame at ratios of 0.7-0.9")
LOOP_LEAF_MIN = _t(
    "LOOP_LEAF_MIN", 3, "wall samples of one callback frame",
    "fewer wall samples of a frame give no on-CPU ratio")
LOOP_MIN_SAMPLES = _t(
    "LOOP_MIN_SAMPLES", 40, "samples of the loop thread",
    "2 s at the default 20 Hz: fewer cannot give a share to +-15 points")
WAIT_FOR_LOAD = _t(
    "WAIT_FOR_LOAD", 0.5, "client latency / (users / throughput)",
    "closed model, Little's law: users / throughput is each user's cycle (latency + think "
    "time); when the latency is half of it or more, the users mostly wait for the service")
AWAIT_SHARE = _t(
    "AWAIT_SHARE", 0.5, "share of the mean client latency",
    "an async service's requests that spend half their latency with the loop idle (neither "
    "computing nor queued for the loop, by the M/M/1 estimate S / (1 - U)) wait on what "
    "they await: an upstream call")
AWAIT_LOOP_BUSY_MAX = _t(
    "AWAIT_LOOP_BUSY_MAX", 0.95, "event loop busy share",
    "above this the M/M/1 estimate S / (1 - U) diverges: a loop this busy is saturated and "
    "the wait is its queue, not awaited I/O")
AWAIT_MIN_US = _t(
    "AWAIT_MIN_US", 5000, "µs of awaited time per request",
    "a few ms awaited per request is a store round trip on a healthy service; 5 ms is not")
AWAIT_BUSY_GROWTH = _t(
    "AWAIT_BUSY_GROWTH", 0.10, "event loop busy share (absolute)",
    "a slower awaited dependency leaves the loop as busy or idler (the FastAPI example's "
    "20 ms slower store: -0.06 .. +0.05); a machine starving the service makes its loop "
    "busier without more CPU per request (runnable, not running: an A/A pair at 93 % other "
    "load went 0.20 -> 0.49): longer waits then are the machine's, not an await's")
CLIENT_TAIL_RATIO = _t(
    "CLIENT_TAIL_RATIO", 5.0, "client p99 / p50 (or p99.9 / p50 / 2)",
    "a client p99 5x its median is a tail of its own (MLServer saturated: 26x); clean "
    "FastAPI runs: 2.5-4x, up to 16x when other processes take 90 % of the machine, which "
    "the rule then calls the machine's (info); p99.9 judged at twice the ratio")
CLIENT_TAIL_MIN_US = _t(
    "CLIENT_TAIL_MIN_US", 5000, "µs (p99 - p50)",
    "a 5x tail of a 1 ms median is 4 ms: not worth a finding")
TAIL_CLASS_CONCENTRATION = _t(
    "TAIL_CLASS_CONCENTRATION", 2.0, "tail share / traffic share",
    "a request name or input class holding at least twice its traffic share of the values "
    "above the client p99 (and half of them) is where the tail comes from")
CPU_STAGE_WARNING = _t(
    "CPU_STAGE_WARNING", {"serialization": 0.25, "upstream": 0.30, "own_code": 0.30},
    "share of the service's on-CPU samples (waits excluded)",
    "CPU the service spends encoding (clean FastAPI: 0-7 %, MLServer: 4-8 %; the slow-"
    "serialization fault: 50-71 %), in its store client (clean: 0-13 %) or in its own code "
    "(clean: 0-8 %) beyond these is worth acting on; inference and the framework are where "
    "a model service's CPU normally goes (info)")
CPU_STAGE_INFO = _t(
    "CPU_STAGE_INFO", 0.10, "share of the service's on-CPU samples",
    "a stage below 10 % of the CPU is not named among where the CPU goes")
PROFILE_MIN_SAMPLES = _t(
    "PROFILE_MIN_SAMPLES", 50, "on-CPU samples (waits excluded)",
    "shares of fewer samples move by +-7 points (binomial, 50 %): too few to rank stages")
CHANGE_PROFILE_MIN_SAMPLES = _t(
    "CHANGE_PROFILE_MIN_SAMPLES", 20, "on-CPU samples (waits excluded) of each run",
    "splitting a CPU-per-request growth by stage subtracts the baseline's stage shares: "
    "with 20 samples a share is known to +-11 points (binomial, 95 %, at 20 %), and the "
    "faults that grow the CPU per request by 50 % or more move the grown stage's share by "
    "40-60 points (FastAPI example: v2 model infer 20 -> 73 %, slow encoder serialize 3 -> "
    "70 %); a clean FastAPI baseline at 40 req/s gets 43-83 samples in 8 s")
# -- input data and failures -------------------------------------------------------------------
TAG_MIN_COUNT = _t(
    "TAG_MIN_COUNT", 30, "requests of the class",
    "fewer requests give no stable p99 to compare")
TAG_P99_RATIO = _t(
    "TAG_P99_RATIO", 2.0, "class p99 / reference class p99",
    "an input class at twice the production class's p99 takes a slow path")
TAG_P99_MIN_US = _t(
    "TAG_P99_MIN_US", 5000, "µs above the reference p99",
    "and 5 ms above it: twice a 1 ms p99 is not a problem")
TAG_FAIL_PCT = _t(
    "TAG_FAIL_PCT", 5.0, "% of the class's requests",
    "an input class that fails 5 % of the time is rejected or breaks the service")
FAILURE_PCT = _t(
    "FAILURE_PCT", 1.0, "% of requests",
    "failures above 1 % are a finding of their own")
FAILURE_CRITICAL_PCT = _t(
    "FAILURE_CRITICAL_PCT", 5.0, "% of requests",
    "from 5 % the latency of the survivors no longer describes the service")
PREDICTION_SHIFT_PSI = _t(
    "PREDICTION_SHIFT_PSI", drift.PSI_MODERATE, "PSI",
    "a test on hundreds of predictions detects shifts too small to matter: a warning needs "
    "a practical size too, PSI 'moderate' (0.1) ...")
PREDICTION_SHIFT_JS = _t(
    "PREDICTION_SHIFT_JS", drift.DISTANCE_THRESHOLD, "Jensen-Shannon distance",
    "... or a JS distance of 0.1 (the drift threshold of docs/monitoring.md)")
POPULARITY_COLLISION = _t(
    "POPULARITY_COLLISION", 0.03, "probability that two requests ask for the same entity",
    "when a run did not record its traffic, its predictions are assumed as clustered as "
    "production-like traffic: Zipf 1.1 over 5,000-100,000 entities (the production "
    "scenario's and the FastAPI locustfile's) gives 0.027-0.037, an effective sample of "
    "~30 predictions however many were made (harness/analysis/data/popularity.py)")
POPULARITY_SHARED = _t(
    "POPULARITY_SHARED", 0.5, "overlap of two runs' entity frequencies",
    "runs that ask for the same popular entities (the same traffic seed) draw their "
    "predictions from the same popularity-weighted mixture: compared with each other, "
    "their predictions are independent draws (no design effect); runs of another hot set "
    "overlap by a few percent")
# -- a run against its baseline (change layer) ------------------------------------------------
CHANGE_CONFIDENCE = _t(
    "CHANGE_CONFIDENCE", 0.95, "probability",
    "of each percentile difference's interval (each run's at sqrt(0.95))")
GROWTH_WARNING = _t(
    "GROWTH_WARNING", 0.25, "relative growth of a tail percentile",
    "run-to-run drift of a shared machine is not in the intervals: a change is a warning "
    "only when it is also large, and a stage grew (A/A pairs stay quiet)")
LOAD_TOLERANCE = _t(
    "LOAD_TOLERANCE", 0.05, "relative difference",
    "users or rate may differ this much between comparable runs")
CAUSE_SHARE = _t(
    "CAUSE_SHARE", 0.25, "share of the growth",
    "a service stage that explains a quarter of the growth is the cause; queueing grows as "
    "a consequence of a slower service")
NAME_DOMINANCE = _t(
    "NAME_DOMINANCE", 1.5, "growth / the next request name's",
    "a fault in one model also slows the others sharing its workers: 'most' needs a margin")
FUNCTION_GROWTH = _t(
    "FUNCTION_GROWTH", 0.05, "share of on-CPU samples (points)",
    "a function whose share of the profile grew by 5 points is worth listing")
FUNCTION_MIN_SAMPLES = _t(
    "FUNCTION_MIN_SAMPLES", 10, "samples",
    "fewer samples of a function are noise")
CPU_GROWTH = _t(
    "CPU_GROWTH", 0.50, "relative growth of CPU time per request",
    "psutil's CPU time per request moves by -15 % .. +35 % between A/A runs on a contended "
    "2-core VM (cache pollution, steal charged to the running task); the fault matrix's "
    "injected CPU faults add +37 % .. +80 %")
CPU_GROWTH_MIN_MS = _t(
    "CPU_GROWTH_MIN_MS", 0.5, "ms of CPU per request",
    "and by at least this much: 50 % of a tiny CPU cost is noise")
# -- a target on another host (node_exporter on its host) -------------------------------------
HOST_STEAL_PCT = _t(
    "HOST_STEAL_PCT", 10.0, "% of the host's CPU time (mean)",
    "steal is time the hypervisor gave another guest while this one wanted a CPU: a tenth "
    "of the host's CPU time stolen slows every stage the way a crowded machine does")
HOST_MEM_AVAILABLE_SHARE = _t(
    "HOST_MEM_AVAILABLE_SHARE", 0.10, "MemAvailable / MemTotal (lowest in the window)",
    "below a tenth of its memory available the kernel reclaims page cache the service's "
    "model and libraries live in, and the OOM killer is near")

# -- distributed load (harness/analysis/selfcheck/workers.py) ---------------------------------
CLOCK_UNCERTAINTY_SHARE = _t(
    "CLOCK_UNCERTAINTY_SHARE", 0.01, "share of the histogram interval",
    "a worker's clock is known to the master's within half the round trip of its best "
    "measurement, plus what moved during the run; a request that completes within that "
    "much of an interval boundary may be counted in the neighbouring interval. At 1 % of "
    "the interval (10 ms at 1 s) about 1 % of a steady load could move: the per-interval "
    "series are then not exact; the run's totals and latencies are unaffected")
