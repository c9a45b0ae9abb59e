"""summary.json's resources of a target on another host: from its /metrics process_*
(``TargetProcessResources``) and from node_exporter on its host (``HostResources``).

Both say their source (``source``: the words the summary, report and diagnosis print) and
are absent when the run has no such rows. CPU is in % of one core, as psutil's service
block (``cpu_mean_pct`` 45.0 = 0.45 cores); the host's CPU in % of all its CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.rundir.records.base import as_map, need

__all__ = ["HostResources", "TargetProcessResources"]


def _read(cls: type, d: Any, where: str) -> Any:
    d = as_map(d, where)
    names = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    return cls(**{k: need(d, k, where) for k in names if k not in _OPTIONAL},
               **{k: d[k] for k in names if k in _OPTIONAL and k in d})


_OPTIONAL = {"open_fds_max", "max_fds", "virtual_max_bytes", "load1_mean", "load1_max",
             "iowait_mean_pct", "steal_mean_pct", "mem_total_bytes", "mem_available_min_bytes",
             "mem_used_mean_bytes"}


@dataclass(frozen=True)
class TargetProcessResources:
    """The target's process as its own process_* metrics tell it, over the window.

    ``intervals``: scrape-to-scrape rates the CPU figures come from; ``left_out``: intervals
    across a restart or a change of process (never a negative rate); ``what``: which
    process(es) answered the scrapes; ``processes``: how many distinct ones."""

    source: str
    url: str
    what: str
    processes: int
    samples: int
    intervals: int
    left_out: int
    cpu_mean_pct: float | None
    cpu_p95_pct: float | None
    cpu_max_pct: float | None
    rss_start_bytes: int
    rss_end_bytes: int
    rss_max_bytes: int
    rss_growth_bytes: int
    open_fds_max: int | None = None
    max_fds: int | None = None
    virtual_max_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Any, where: str = "resources.target_process"
                  ) -> TargetProcessResources:
        return _read(cls, d, where)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class HostResources:
    """The service's host as node_exporter tells it, over the window: busy CPU (all modes
    but idle and iowait) as % of its ``cpus`` and as cores, iowait and steal as % of its
    CPU time, memory (MemTotal - MemAvailable) and the 1-minute load average."""

    source: str
    url: str
    cpus: int
    samples: int
    intervals: int
    left_out: int
    cpu_mean_pct: float
    cpu_p95_pct: float
    cpu_max_pct: float
    busy_cores_mean: float
    iowait_mean_pct: float | None = None
    steal_mean_pct: float | None = None
    mem_total_bytes: int | None = None
    mem_used_mean_bytes: int | None = None
    mem_available_min_bytes: int | None = None
    load1_mean: float | None = None
    load1_max: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Any, where: str = "resources.host") -> HostResources:
        return _read(cls, d, where)  # type: ignore[no-any-return]
