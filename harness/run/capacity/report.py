"""The capacity sweep as a table: the latency-throughput curve, the capacity, the knee.

The table marks the answer (``<- capacity``: the highest rate whose steps met the SLO by
majority, below the lowest that did not); the knee is a different question (where p99
starts to climb faster than the achieved rate) and gets its own line saying where it lies
against the capacity. They used to share the marker column, and a table marking the knee
at 26 read as contradicting "capacity: 27 req/s".
"""

from __future__ import annotations

from harness.run.capacity.model import CapacityResult

__all__ = ["format_capacity"]


def format_capacity(result: CapacityResult) -> list[str]:
    """The latency-throughput curve as a table, the capacity found and the knee."""
    lines = [f"sweep {result.sweep_dir}  ({len(result.steps)} steps, {result.elapsed_s:.0f} s)",
             "", f"{'rate/s':>9} {'scheduled/s':>12} {'achieved/s':>11} {'p50 ms':>9} "
             f"{'p90 ms':>9} {'p99 ms':>9} {'errors':>7}  verdict"]

    def ms(us: int | None) -> str:
        return "-" if us is None else f"{us / 1000:.3f}"

    for point in result.curve():
        s = point.latest
        err = "-" if s.error_rate is None else f"{100 * s.error_rate:.2f}%"
        ach = "-" if s.achieved_rps is None else f"{s.achieved_rps:.1f}"
        held = "-" if s.target_rps is None else f"{s.target_rps:.1f}"
        mark = "  <- capacity" if result.capacity_rps == s.rate_rps else ""
        lines.append(f"{s.rate_rps:>9g} {held:>12} {ach:>11} {ms(s.p50_us):>9} "
                     f"{ms(s.p90_us):>9} {ms(s.p99_us):>9} {err:>7}  {point.verdict}{mark}")
        lines += [f"{'':>11}{row}" for row in s.failed_rows[:2]]
    if any(s.achieved_by for s in result.steps):
        lines += ["", "scheduled/s: the intended starts the step's measured window held "
                      "(Poisson arrivals vary around the rate); achieved/s: those that were "
                      "made (or the requests answered, when fewer): never above scheduled"]
    lines += ["", result.reason or "-"]
    if result.capacity_rps is not None:
        lines.append(f"capacity: {result.capacity_rps:g} req/s meets the SLO")
    lines.append(result.knee_reading())
    return lines
