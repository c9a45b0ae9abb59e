"""The signals that stop a run, honoured from the first instant of it.

SIGINT (Ctrl-C), SIGTERM (a CI job's timeout, ``kill``), SIGHUP (the terminal closed: an
SSH session dropped, a tmux pane was killed) and SIGQUIT (Ctrl-\\) all mean "stop, keep
what was measured". Without a handler SIGHUP and SIGQUIT killed the harness at once and
left the service it started running with parent 1; and a signal that came while the
target started was noticed only once the target was up (after up to a minute).

:class:`Interrupts` records every signal. While the run starts (inside
:meth:`Interrupts.raising`) a signal raises :class:`Interrupted` out of whatever the
harness was waiting for (a service's readiness, a probe of the target): the run ends
``incomplete`` and its children are stopped. Once the load driver runs, the signal is only
recorded: the orchestrator forwards it to the driver, which stops its users and writes
what it measured.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["STOP_SIGNALS", "Interrupted", "Interrupts", "signal_name"]

STOP_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """A stop signal came while the run was starting. A BaseException, so that no
    ``except Exception`` on the way (a collector's start, a probe) swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal_name(signum)}")
        self.signum = signum


class Interrupts:
    """Records SIGINT, SIGTERM, SIGHUP and SIGQUIT while the block runs (main thread only:
    elsewhere Python delivers no signal)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._raising = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    @property
    def signal(self) -> int | None:
        """The first signal received, or None."""
        return self.received[0] if self.received else None

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """Inside the block, a signal (or one that came before it) raises Interrupted."""
        if self.received:
            raise Interrupted(self.received[0])
        self._raising = True
        try:
            yield
        finally:
            self._raising = False

    def _handle(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        if self._raising:
            self._raising = False  # once: a second signal must not interrupt the clean-up
            raise Interrupted(signum)
