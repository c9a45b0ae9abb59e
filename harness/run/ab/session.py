"""The runs of an A/B session: 2 K full runs in rounds of one A and one B (A B, B A, A B,
...), each in the session directory.

Each run is ``harness.run.run`` of its side's options, as ``harness run`` would make it;
with ``--serve reference`` every run starts its own service. That is deliberate: a run is
the unit of replication, so everything that differs between two runs of the same thing
(the service's start, its memory layout, the minute's neighbours) must differ between
the K runs of a side too. A service kept up for all of one side's runs would hide its
own luck from the spread between runs and make a difference of the two services look
like a difference of the versions (pseudo-replication).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.run.ab.model import SIDES, AbError, AbOptions, AbRun, AbSession, read_session
from harness.run.options import EXIT_INTERRUPTED, RunError, RunOptions
from harness.run.orchestrator import run
from harness.rundir import write_json_atomic

__all__ = ["run_ab", "session_dir"]

USABLE = ("complete", "degraded")


def session_dir(out: Path, label: str) -> Path:
    """A new, empty session directory ``out/<time>-ab-<label>-<hex>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(64):
        path = out / f"{stamp}-ab-{label}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise AbError(f"could not create a session directory under {out}")


def _describe(label: str, opts: RunOptions) -> dict[str, Any]:
    return {"label": label, "target": opts.target, "serve": opts.serve,
            "service_options": opts.serve_options.describe() if opts.serve else None,
            "tags": dict(opts.tags), "locust_args": list(opts.locust_args)}


def _new_sides(opts: AbOptions) -> dict[str, dict[str, Any]]:
    return {s: _describe(opts.labels[i], opts.side(s)) for i, s in enumerate(SIDES)}


def _new_session(opts: AbOptions) -> AbSession:
    path = session_dir(opts.out, opts.a.scenario.stem)
    return AbSession(path=path, runs_per_side=opts.runs, labels=opts.labels,
                     sides=_new_sides(opts), command_line=opts.command_line,
                     created=time.time())


def _one_run(opts: AbOptions, session: AbSession, rnd: int, side: str) -> AbRun:
    base = opts.side(side)
    step = dataclasses.replace(base, out=session.path,
                               tags={**base.tags, "ab_side": side},
                               command_line=opts.command_line or base.command_line)
    began = time.monotonic()
    try:
        result = run(step)
    except RunError as exc:
        where = exc.run_dir.name if exc.run_dir is not None else "?"
        session.runs.append(AbRun(rnd, side, where, "failed", 2,
                                  round(time.monotonic() - began, 3)))
        raise AbError(f"run {side}{rnd} could not run: {exc}", session.path) from None
    return AbRun(rnd, side, result.run_dir.name, result.status, result.exit_code,
                 round(time.monotonic() - began, 3))


def run_ab(opts: AbOptions, on_run: Callable[[AbRun, AbSession], None] | None = None,
           resume: Path | None = None) -> AbSession:
    """Make the session's runs, A B, B A, A B, ...; ``resume``: a session directory to finish (its
    complete and degraded runs are kept, the others made). Writes ab.json after every run.
    Raises AbError when a run could not start (the index says which)."""
    session = read_session(resume) if resume is not None else _new_session(opts)
    if resume is not None:
        session.runs_per_side, session.labels = opts.runs, opts.labels
        session.sides = session.sides or _new_sides(opts)
        session.state, session.reason = "running", None
    began = time.monotonic() - session.elapsed_s
    done = {(r.round, r.side) for r in session.runs if r.status in USABLE}

    def save() -> None:
        session.elapsed_s = time.monotonic() - began
        write_json_atomic(session.path / "ab.json", session.to_dict())

    save()
    try:
        for rnd, side in opts.order():
            if (rnd, side) in done:
                continue
            record = _one_run(opts, session, rnd, side)
            session.runs.append(record)
            save()
            if on_run is not None:
                on_run(record, session)
            if record.exit_code == EXIT_INTERRUPTED:
                session.state, session.reason = "stopped", f"run {side}{rnd} was interrupted"
                return session
        session.state = "done"
        return session
    except AbError as exc:
        session.state, session.reason = "failed", str(exc)
        raise
    finally:
        save()
