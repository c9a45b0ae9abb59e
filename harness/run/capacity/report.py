"""The capacity sweep as a table: the latency-throughput curve, the knee, the capacity."""

from __future__ import annotations

from harness.run.capacity.model import CapacityResult

__all__ = ["format_capacity"]


def format_capacity(result: CapacityResult) -> list[str]:
    """The latency-throughput curve as a table, the knee and the capacity found."""
    lines = [f"sweep {result.sweep_dir}  ({len(result.steps)} steps, {result.elapsed_s:.0f} s)",
             "", f"{'rate/s':>9} {'achieved/s':>11} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
             f"{'errors':>7}  verdict"]

    def ms(us: int | None) -> str:
        return "-" if us is None else f"{us / 1000:.3f}"

    for point in result.curve():
        s = point.latest
        err = "-" if s.error_rate is None else f"{100 * s.error_rate:.2f}%"
        ach = "-" if s.achieved_rps is None else f"{s.achieved_rps:.1f}"
        mark = "  <- knee" if result.knee_rps == s.rate_rps else ""
        lines.append(f"{s.rate_rps:>9g} {ach:>11} {ms(s.p50_us):>9} {ms(s.p90_us):>9} "
                     f"{ms(s.p99_us):>9} {err:>7}  {point.verdict}{mark}")
        lines += [f"{'':>11}{row}" for row in s.failed_rows[:2]]
    lines += ["", result.reason or "-"]
    if result.capacity_rps is not None:
        lines.append(f"capacity: {result.capacity_rps:g} req/s meets the SLO")
    return lines
