"""Which Server-Timing entry is the service's own total, whatever the service calls it.

Services name their total ``app``, ``total``, ``request``, ``server``, ``handler``…, send it
beside their stages (``db;dur=2, model;dur=5, encode;dur=1, total;dur=8.4``), or send only
stages, or nest them (``handler`` holding ``db``). The residual (client time minus the
service's time) is only right with the right total, so it is inferred from the values, not
from a list of names:

1. an entry *covers* the others on a request when it is >= their sum (within the header's
   rounding, 1 µs per entry); a **candidate** covers the others on at least 99 % of those of
   the first ``decide_after`` requests that carry two or more entries (a sibling stage that is
   usually the largest still falls short whenever the others run long);
2. the candidate is the total when the entries *cannot all be siblings*: their sum exceeds
   the client's own latency on at least 1 % of those requests (siblings run inside the
   request, so they add up to less than it), or, when queueing hides that, the candidate's
   excess over the others is at most half of it on the median request (a total's excess
   is the framework's time around the stages; a sibling that dominates by chance leaves
   most of itself unexplained);
3. otherwise the entries are siblings and the service's time is their sum.

A single entry is the total. ``--service-total NAME`` skips the inference. Until the
decision the residuals are kept and recorded once it is made, so none is lost or computed
with a guess. What was decided, and on what evidence, goes to load.json
(``service_total``) and the summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ServiceTotal"]

COVER_SHARE = 0.99      # a candidate covers the others on this share of requests
ABOVE_CLIENT_SHARE = 0.01   # sums above the client time on this share: not all siblings
EXCESS_SHARE = 0.5      # a total's median excess over the other entries, share of itself


class ServiceTotal:
    """Decides the total once, from the first requests; then answers per request."""

    def __init__(self, given: str | None = None, decide_after: int = 50) -> None:
        if decide_after < 1:
            raise ValueError(f"decide_after must be >= 1 (got {decide_after!r})")
        self.given = given
        self.decide_after = decide_after
        self.name: str | None = given
        self.decided = given is not None
        self.how = "given (--service-total)" if given is not None else ""
        self.evidence: dict[str, Any] = {}
        self._samples: list[tuple[dict[str, int], int]] = []
        self._pending: list[tuple[dict[str, int], int, Callable[[int], None]]] = []
        self.total_missing = 0

    # -- per request ---------------------------------------------------------------------
    def residual(self, stages_us: dict[str, int], client_us: int,
                 record: Callable[[int], None]) -> None:
        """Hand ``record`` this request's service time (µs) once it is known: now, or when
        the decision is made (the first requests wait for it)."""
        if self.decided:
            record(self._total(stages_us))
            return
        if len(stages_us) >= 2:
            self._samples.append((stages_us, client_us))
        self._pending.append((stages_us, client_us, record))
        if len(self._pending) >= self.decide_after:
            self.decide()

    def flush(self) -> None:
        """Decide with what there is (the load ended before ``decide_after`` requests)."""
        if not self.decided:
            self.decide()

    def _total(self, stages_us: dict[str, int]) -> int:
        if self.name is not None:
            value = stages_us.get(self.name)
            if value is not None:
                return value
            self.total_missing += 1
        return sum(stages_us.values())

    # -- the decision ----------------------------------------------------------------------
    def decide(self) -> None:
        self.name, self.how, self.evidence = infer_total(self._samples)
        self.decided = True
        pending, self._pending, self._samples = self._pending, [], []
        for stages_us, _client, record in pending:
            record(self._total(stages_us))

    def report(self) -> dict[str, Any]:
        return {"name": self.name, "how": self.how or "no request carried Server-Timing",
                "evidence": dict(self.evidence), "total_missing": self.total_missing}


def infer_total(samples: list[tuple[dict[str, int], int]]
                ) -> tuple[str | None, str, dict[str, Any]]:
    """(name or None for the sum, how, evidence) from (entries µs, client µs) samples with
    two or more entries each (see the module docstring)."""
    if not samples:
        return None, "one entry per request (it is the total)", {}
    n = len(samples)
    names = sorted({k for stages, _ in samples for k in stages})
    best, best_cover, best_mean = None, 0.0, -1.0
    for name in names:
        cover, total = 0, 0
        for stages, _ in samples:
            if name in stages:
                others = sum(stages.values()) - stages[name]
                cover += stages[name] + len(stages) >= others
                total += stages[name]
        share, mean = cover / n, total / n
        if share >= COVER_SHARE and mean > best_mean:
            best, best_cover, best_mean = name, share, mean
    if best is None:
        return None, "sum of the entries (none covers the others: siblings)", {"requests": n}
    above = sum(sum(stages.values()) > client + len(stages) for stages, client in samples)
    excess = sorted((stages[best] - (sum(stages.values()) - stages[best])) / stages[best]
                    for stages, _ in samples if stages.get(best))
    median_excess = excess[len(excess) // 2] if excess else 1.0
    evidence = {"requests": n, "covers_share": round(best_cover, 4),
                "sum_above_client": above, "median_excess_share": round(median_excess, 4)}
    if above >= ABOVE_CLIENT_SHARE * n:
        return best, (f"inferred: {best!r} covers the other entries on {best_cover:.0%} of "
                      f"{n} requests and the entries sum above the client time on {above}"), \
            evidence
    if median_excess <= EXCESS_SHARE:
        return best, (f"inferred: {best!r} covers the other entries on {best_cover:.0%} of "
                      f"{n} requests, exceeding their sum by {median_excess:.0%} of itself "
                      "(median)"), evidence
    return None, (f"sum of the entries ({best!r} is the largest but leaves "
                  f"{median_excess:.0%} of itself unexplained: taken as a sibling stage; "
                  f"--service-total {best} if it is the service's total)"), evidence
