"""How ``swarm run`` stops: SIGINT, SIGTERM and ``swarm stop`` all end a run gracefully.

The first stop (a signal, or a ``swarm stop`` request found between chunks) lets the chunks in
flight finish, for at most :data:`STOP_GRACE_S` (an agent still busy then is abandoned: killed,
to resume from its last periodic checkpoint), then checkpoints every agent and level server,
writes the summary and prints the resume command, exactly as Ctrl-C always did. A second signal
forces a prompt exit: :class:`ForcedStop` is raised wherever the driver is (a Ray call included),
the actors are killed without a final checkpoint (every store write is atomic or journaled, so the
stores hold their last checkpoints and journals, never half a file), the status says ``aborted``.
A third signal exits at once (``os._exit``).

Ray turns any KeyboardInterrupt raised by a handler during ``ray.get``/``ray.wait`` into a plain
KeyboardInterrupt, so the driver tells the two apart by :attr:`StopSignals.forced`, not by type.

Why explicit handlers: a process started in the background by a non-interactive shell inherits
SIGINT ignored, and Python then installs no KeyboardInterrupt handler; ``ray.init`` installs its
own SIGTERM handler (the driver's ``sys.exit``, and with an embedded cluster one that kills every
Ray process at once). :meth:`StopSignals.install` takes both signals back and is called again
after ``ray.init``.

Exit codes (:func:`exit_code`): 130 for SIGINT, 143 for SIGTERM (128 + the signal number, the
shell's convention), 0 for a run that finished or was stopped by ``swarm stop``.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType

STOP_GRACE_S = 20.0  # how long the chunks in flight may take to finish once a stop is asked
SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_COMMAND = "swarm stop"  # the reason recorded for a stop asked through the run directory


class StopRequested(KeyboardInterrupt):
    """A first signal that arrived while the driver could not poll for it (starting Ray, launching the
    actors): the startup is abandoned. ``signum``: the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ForcedStop(KeyboardInterrupt):
    """A second signal: stop now, without a final checkpoint. ``signum``: the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class RunStopped(Exception):
    """``swarm run`` ended without a summary: stopped while starting, or forced by a second signal.
    The status is written and the resume command printed before this is raised.

    Attributes: ``run_dir``; ``state`` (``interrupted`` or ``aborted``); ``stopped_by`` (``SIGINT``,
    ``SIGTERM``); ``exit_code`` (:func:`exit_code`)."""

    run_dir: str
    state: str
    stopped_by: str

    def __str__(self) -> str:
        return f"{self.run_dir}: {self.state} by {self.stopped_by}"

    @property
    def exit_code(self) -> int:
        """The process exit code this stop calls for."""
        return exit_code(self.stopped_by)


def exit_code(stopped_by: str | None) -> int:
    """128 + the signal's number for ``SIGINT``/``SIGTERM`` (130, 143); 0 otherwise (finished, ``swarm stop``)."""
    if stopped_by in ("SIGINT", "SIGTERM"):
        return 128 + signal.Signals[stopped_by].value
    return 0


def describe(reason: str) -> str:
    """How the driver names a stop to people: ``Ctrl-C (SIGINT)``, ``SIGTERM``, ``swarm stop``."""
    return "Ctrl-C (SIGINT)" if reason == "SIGINT" else reason


class StopSignals:
    """The driver's SIGINT and SIGTERM handlers and the stop they ask for (see the module docstring).

    Attributes:
        reason: None until a stop is asked; then ``SIGINT``, ``SIGTERM`` or :data:`STOP_COMMAND`.
        interruptible: while True (startup), a first signal raises :class:`StopRequested`; while
            False (the driver loop, which polls :attr:`reason` every second) it only sets the reason.
        installed: whether the handlers are in place (only the main thread can install them).
        forced: None, or the number of the signal that forced the stop (the second one).
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.interruptible = True
        self.installed = False
        self.forced: int | None = None
        self._count = 0
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Install (or, after ``ray.init`` replaced one, re-install) the handlers, whatever was there:
        an inherited SIG_IGN included. Outside the main thread (where Python allows no handler) a no-op."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            if sig not in self._previous:
                self._previous[sig] = previous
        self.installed = True

    def restore(self) -> None:
        """Put back the handlers found by the first :meth:`install`; an inherited SIG_IGN for SIGINT
        becomes Python's Ctrl-C handler (what comes next, e.g. ``--linger``, stops on Ctrl-C too)."""
        if not self.installed:
            return
        for sig, previous in self._previous.items():
            if sig == signal.SIGINT and previous in (signal.SIG_IGN, None):
                previous = signal.default_int_handler
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self.installed = False

    def request(self, reason: str) -> bool:
        """Ask for a stop without a signal (``swarm stop``); True when this is the first stop asked."""
        if self.reason is not None:
            return False
        self.reason = reason
        self._count = max(self._count, 1)
        return True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._count += 1
        if self._count == 1:
            self.reason = signal.Signals(signum).name
            if self.interruptible:
                raise StopRequested(signum)
        elif self._count == 2:
            self.forced = signum
            raise ForcedStop(signum)
        else:  # the forced stop's own cleanup hangs: leave now (the stores are consistent at any instant)
            os._exit(128 + signum)
