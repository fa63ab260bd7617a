"""The run directory: the one owner of its layout, its Ray namespace and its status file.

A run directory (``runs/<name>/`` by default) holds:

- ``config.yaml``: the resolved config (``--resume`` reads it back);
- ``metrics.jsonl``: one JSON record per agent chunk and server poll;
- ``status.json``: the live snapshot ``swarm status`` shows (written atomically), with the
  driver's ``heartbeat`` and identity (``driver``: pid, process start time, host);
- ``stop-request.json``: present while ``swarm stop`` asks the running driver to stop;
- ``levels/<server>/``: each level server's checkpoints and journal;
- ``agents/<agent id>/``: each agent's checkpoints;
- ``summary.json`` + ``summary.md``: written when the run ends.

States (``status.json``'s ``state``): ``starting`` and ``running`` while the driver lives
(:data:`LIVE_STATES`); then ``finished`` (every agent reached ``run.steps``), ``stopped``
(``swarm stop``), ``interrupted`` (SIGINT or SIGTERM: checkpointed), ``aborted`` (left without a
final checkpoint: a second signal, or an error; the stores hold their last checkpoints and
journals). A reader sees a fifth, derived one, ``dead``: the file says live but its driver is
gone or its heartbeat is older than :data:`STALE_S` (:meth:`RunDir.liveness`). Every state but
``finished`` resumes with ``swarm run --resume RUN_DIR``.

Importing this module loads neither torch nor Ray (``swarm status`` stays fast).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_OUT_DIR = "runs"
LIVE_STATES = ("starting", "running")
HEARTBEAT_S = 2.0  # the driver rewrites status.json's heartbeat at least this often ...
STALE_S = 30.0  # ... and a live-looking run whose heartbeat is older than this is dead


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader, or a process killed
    mid-write, never leaves half a file (the temporary name is per process and thread)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def driver_identity() -> dict[str, Any]:
    """This process as a run's driver: ``pid``, ``create_time`` (psutil's, Unix seconds: with the pid it
    tells a reused pid apart) and ``host`` (the pid means something only there)."""
    import psutil

    return {"pid": os.getpid(), "create_time": psutil.Process().create_time(), "host": socket.gethostname()}


def driver_alive(driver: dict[str, Any] | None) -> bool | None:
    """Whether the process of :func:`driver_identity` ``driver`` still runs: True or False when it can be
    told from this host, None when not (another host, or no identity recorded)."""
    if not driver or driver.get("host") != socket.gethostname() or "pid" not in driver:
        return None
    import psutil

    try:
        proc = psutil.Process(int(driver["pid"]))
        same = abs(proc.create_time() - float(driver.get("create_time", 0.0))) < 1.0
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


@dataclass(frozen=True)
class Liveness:
    """What a run's ``status.json`` means now (:meth:`RunDir.liveness`).

    Attributes:
        state: the recorded state, or ``dead`` when it says live but its driver is gone or silent.
        recorded: the state as written (``none`` when there is no status file).
        heartbeat_age_s: seconds since the driver's last heartbeat (None without a status file).
        why: for ``dead``, what shows it (e.g. ``its driver (pid 123) is gone``); else empty.
    """

    state: str
    recorded: str
    heartbeat_age_s: float | None
    why: str = ""

    @property
    def live(self) -> bool:
        """True while a driver runs the run (``starting`` or ``running``, not dead)."""
        return self.state in LIVE_STATES

    def describe(self) -> str:
        """One phrase for people: ``running``, ``finished``, ``dead (...; last heartbeat 42 s ago)``."""
        if self.state != "dead":
            return self.state
        return f"dead (status says {self.recorded} but {self.why}; last heartbeat {self.heartbeat_age_s:.0f} s ago)"


def liveness_of(snap: dict[str, Any], now: float | None = None) -> Liveness:
    """The :class:`Liveness` of a status snapshot (see :meth:`RunDir.liveness`). A snapshot without a
    heartbeat (written before heartbeats existed) is judged by its ``updated`` time."""
    now = time.time() if now is None else now
    recorded = str(snap.get("state", "stopped"))
    beat = snap.get("heartbeat", snap.get("updated"))
    age = None if beat is None else max(0.0, now - float(beat))
    if recorded not in LIVE_STATES:
        return Liveness(recorded, recorded, age)
    driver = snap.get("driver")
    alive = driver_alive(driver)
    if alive is False:
        return Liveness("dead", recorded, age, f"its driver (pid {driver['pid']}) is gone")
    if age is None or age > STALE_S:
        return Liveness("dead", recorded, age, f"its driver has not written a heartbeat for over {STALE_S:.0f} s")
    return Liveness(recorded, recorded, age)


class RunDir:
    """Paths inside one run directory (nothing is created until asked)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def stop_request(self) -> Path:
        """The file by which ``swarm stop`` asks the running driver to stop (:meth:`request_stop`)."""
        return self.path / "stop-request.json"

    @property
    def summary_json(self) -> Path:
        return self.path / "summary.json"

    @property
    def summary_md(self) -> Path:
        return self.path / "summary.md"

    def level_store(self, server: str) -> Path:
        """Checkpoints and journal of the level server ``server`` (e.g. ``swarm/text``)."""
        return self.path / "levels" / server

    def agent_store(self, agent_id: str) -> Path:
        """Checkpoints of the agent ``agent_id``."""
        return self.path / "agents" / agent_id

    @property
    def namespace(self) -> str:
        """The Ray namespace of the run's actors: ``swarm-<directory name>``."""
        return "swarm-" + re.sub(r"[^A-Za-z0-9_.-]", "-", self.path.resolve().name)

    def is_run(self) -> bool:
        """True when the directory holds a run's resolved config."""
        return self.config.is_file()

    def require_run(self) -> RunDir:
        """This run directory; ``FileNotFoundError`` naming it when it holds no run."""
        if not self.is_run():
            raise FileNotFoundError(f"{self.path}: not a run directory (no config.yaml)")
        return self

    def read_status(self) -> dict[str, Any]:
        """The last snapshot written by the run's driver; ``FileNotFoundError`` when there is none."""
        if not self.status.is_file():
            raise FileNotFoundError(f"{self.status}: no status here (is {self.path} a run directory of "
                                    "`swarm run`?)")
        return json.loads(self.status.read_text())

    def write_status(self, snapshot: dict[str, Any]) -> None:
        """Write ``snapshot`` to ``status.json`` atomically (temp file + rename): a reader never sees half."""
        write_atomic(self.status, json.dumps(snapshot, default=str))

    def liveness(self, now: float | None = None) -> Liveness:
        """Whether the run is live, ended (its recorded state), or ``dead``: ``status.json`` says
        ``starting``/``running`` but the driver's process is gone (checked by pid and start time when it
        ran on this host) or its heartbeat is older than :data:`STALE_S`. ``recorded`` is ``none``
        when there is no status file (the run never started, or a driver from before status files)."""
        try:
            snap = self.read_status()
        except (FileNotFoundError, ValueError):  # ValueError: not JSON (a file from elsewhere)
            return Liveness("none", "none", None)
        return liveness_of(snap, now)

    def request_stop(self) -> None:
        """Ask the run's driver to stop gracefully (it polls for the request between chunks, takes it
        away, checkpoints everything and writes its summary, as on Ctrl-C)."""
        write_atomic(self.stop_request, json.dumps({"requested": time.time(), "by_pid": os.getpid()}))

    def take_stop_request(self) -> bool:
        """True once when a stop was requested (the request is removed, so a resume does not stop again)."""
        try:
            self.stop_request.unlink()
        except FileNotFoundError:
            return False
        return True


def namespace_of(run_dir: str | Path) -> str:
    """The Ray namespace of the actors of the run in ``run_dir``."""
    return RunDir(run_dir).namespace


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The status snapshot of the run in ``run_dir`` (see :meth:`RunDir.read_status`)."""
    return RunDir(run_dir).read_status()


def latest_run(out_dir: str | Path = DEFAULT_OUT_DIR) -> Path | None:
    """The run directory under ``out_dir`` whose status was updated last; None when there is none."""
    found = sorted(Path(out_dir).glob("*/status.json"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def new_run_dir(out_dir: str | Path, name: str | None = None) -> RunDir:
    """Create ``out_dir/<name>`` (default name: the current time); ``FileExistsError`` when it holds a run."""
    path = Path(out_dir) / (name or time.strftime("%Y%m%d-%H%M%S"))
    run = RunDir(path)
    if run.is_run():
        raise FileExistsError(f"{path} already holds a run; continue it with `swarm run --resume {path}` "
                              "or pick another run.name")
    path.mkdir(parents=True, exist_ok=True)
    return run
