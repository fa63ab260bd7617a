"""The run directory: the one owner of its layout, its Ray namespace and its status file.

A run directory (``runs/<name>/`` by default) holds:

- ``config.yaml``: the resolved config (``--resume`` reads it back);
- ``metrics.jsonl``: one JSON record per agent chunk and server poll;
- ``status.json``: the live snapshot ``swarm status`` shows (written atomically), with the
  driver's ``heartbeat`` and identity (``driver``: pid, process start time, host);
- ``stop-request.json``: present while ``swarm stop`` asks the running driver to stop;
- ``members.jsonl``: the membership changes applied to the live run (``swarm agents add/remove``,
  the AddAgent/RemoveAgent RPCs), one JSON line each; ``--resume`` replays them;
- ``membership/<id>.request.json`` / ``<id>.answer.json``: a ``swarm agents`` request waiting for
  the driver, and its answer (:meth:`RunDir.submit_member_request`);
- ``levels/<server>/``: each level server's checkpoints and journal;
- ``agents/<agent id>/``: each agent's checkpoints;
- ``summary.json`` + ``summary.md``: written when the run ends.

With ``run.storage`` set (a local or NFS path, or a URI such as ``s3://bucket/prefix``), the
stores live under ``<run.storage>/<run name>/`` instead (``levels/...``, ``agents/...``, plus a
copy of ``config.yaml``), through :mod:`cluster.storage`: the run directory keeps only the
driver's files. ``swarm run --resume s3://bucket/prefix/<run name>`` then resumes on any machine:
:meth:`RunDir.require_run` fetches the config and recreates the local run directory
(``<run.out_dir>/<run name>``). Filesystem options come from ``run.storage_options`` (they
travel with each store's location, see :func:`cluster.storage.with_options`) or the environment.

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
    """Paths inside one run directory (nothing is created until asked). ``path``: the directory, or
    the URI of a run's stores (``s3://bucket/prefix/<run name>``) to resume from: :meth:`require_run`
    then makes the local directory from the config stored there."""

    def __init__(self, path: str | Path) -> None:
        from cluster.storage import is_uri

        self.remote = str(path) if is_uri(path) else None  # a run named by its stores' URI
        self.path = Path(DEFAULT_OUT_DIR) / self.remote.partition("?")[0].rstrip("/").rpartition("/")[2] \
            if self.remote else Path(path)
        self._stores: tuple[Any, ...] | None = None  # (Storage of the run's stores or None, location text)

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
    def members_log(self) -> Path:
        """The membership changes applied to the run, one JSON line each (:mod:`swarm.run.membership`)."""
        return self.path / "members.jsonl"

    @property
    def membership_requests(self) -> Path:
        """Where ``swarm agents add/remove`` leaves requests for the driver and reads its answers."""
        return self.path / "membership"

    @property
    def summary_json(self) -> Path:
        return self.path / "summary.json"

    @property
    def summary_md(self) -> Path:
        return self.path / "summary.md"

    def stores_root(self) -> tuple[Any, str] | None:
        """Where the stores live when ``run.storage`` is set: ``(Storage, location)`` of
        ``<run.storage>/<run name>`` (the location text carries ``run.storage_options``), its copy of
        ``config.yaml`` written there when missing; None when the stores are in this directory."""
        if self._stores is None:
            if not self.config.is_file():
                return None  # no run here yet: nothing to cache
            self._stores = (None, "")
            storage, options = _storage_of(self.config)
            if storage:
                from cluster.storage import Storage, is_uri, with_options

                name = self.path.resolve().name
                location = with_options(f"{storage.rstrip('/')}/{name}", options) if is_uri(storage) \
                    else str(Path(storage) / name)
                root = Storage(location)
                if not root.exists("config.yaml"):
                    root.makedirs()
                    root.write_atomic("config.yaml", self.config.read_bytes())
                self._stores = (root, location)
        return None if self._stores[0] is None else self._stores  # type: ignore[return-value]

    def _store(self, *parts: str) -> Path | str:
        root = self.stores_root()
        if root is None:
            return self.path.joinpath(*parts)
        storage, location = root
        if storage.local:
            return Path(location).joinpath(*parts)
        from cluster.storage import split_options, with_options

        base, options = split_options(location)
        return with_options("/".join([base, *parts]), options)

    def level_store(self, server: str) -> Path | str:
        """Checkpoints and journal of the level server ``server`` (e.g. ``swarm/text``): a path, or a
        URI (with its options) when ``run.storage`` names one."""
        return self._store("levels", server)

    def agent_store(self, agent_id: str) -> Path | str:
        """Checkpoints of the agent ``agent_id`` (a path, or a URI as for :meth:`level_store`)."""
        return self._store("agents", agent_id)

    @property
    def namespace(self) -> str:
        """The Ray namespace of the run's actors: ``swarm-<directory name>``."""
        return "swarm-" + re.sub(r"[^A-Za-z0-9_.-]", "-", self.path.resolve().name)

    def is_run(self) -> bool:
        """True when the directory holds a run's resolved config."""
        return self.config.is_file()

    def require_run(self) -> RunDir:
        """This run directory; ``FileNotFoundError`` naming it when it holds no run. A run named by its
        stores' URI is fetched first: its ``config.yaml`` is read from there and the local directory
        ``<run.out_dir>/<run name>`` made (or refreshed) with it."""
        if self.remote is not None:
            self._fetch_remote()
        if not self.is_run():
            raise FileNotFoundError(f"{self.path}: not a run directory (no config.yaml)")
        return self

    def _fetch_remote(self) -> None:
        from cluster.storage import Storage

        root = Storage(self.remote)
        try:
            text = root.read_bytes("config.yaml")
        except FileNotFoundError:
            raise FileNotFoundError(f"{root.where()}: not a run's stores (no config.yaml)") from None
        import yaml

        out_dir = (yaml.safe_load(text) or {}).get("run", {}).get("out_dir") or DEFAULT_OUT_DIR
        self.path = Path(out_dir) / self.path.name
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config, text.decode())
        self._stores = None

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

    def submit_member_request(self, request: dict[str, Any]) -> str:
        """Leave a membership request (``op``: add or remove, ``name``, ...) for the driver, which takes it
        between chunks; returns its id, to wait for :meth:`member_answer`."""
        rid = f"{time.time_ns():x}-{os.getpid()}"
        self.membership_requests.mkdir(parents=True, exist_ok=True)
        write_atomic(self.membership_requests / f"{rid}.request.json", json.dumps({**request, "id": rid}))
        return rid

    def take_member_requests(self) -> list[dict[str, Any]]:
        """The waiting membership requests, oldest first, each removed as it is taken."""
        out = []
        for f in sorted(self.membership_requests.glob("*.request.json")) if self.membership_requests.is_dir() else []:
            try:
                out.append(json.loads(f.read_text()))
            except ValueError:  # not ours (a half-written file is never seen: write_atomic)
                continue
            finally:
                f.unlink(missing_ok=True)
        return out

    def answer_member_request(self, rid: str, answer: dict[str, Any]) -> None:
        """The driver's answer to request ``rid`` (see :meth:`member_answer`)."""
        write_atomic(self.membership_requests / f"{rid}.answer.json", json.dumps(answer, default=str))

    def member_answer(self, rid: str) -> dict[str, Any] | None:
        """The answer to request ``rid`` once the driver gave it (the file is then removed); else None."""
        f = self.membership_requests / f"{rid}.answer.json"
        try:
            answer = json.loads(f.read_text())
        except FileNotFoundError:
            return None
        f.unlink(missing_ok=True)
        return answer

    def withdraw_member_request(self, rid: str) -> bool:
        """Take back request ``rid`` if the driver has not taken it yet (True then)."""
        try:
            (self.membership_requests / f"{rid}.request.json").unlink()
        except FileNotFoundError:
            return False
        return True

    def read_members(self) -> list[dict[str, Any]]:
        """Every membership change applied to the run, in order (none when the log is missing)."""
        if not self.members_log.is_file():
            return []
        return [json.loads(line) for line in self.members_log.read_text().splitlines() if line.strip()]

    def log_member(self, change: dict[str, Any]) -> None:
        """Append one applied membership change to ``members.jsonl`` and flush it to disk."""
        with open(self.members_log, "a") as f:
            f.write(json.dumps(change, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _storage_of(config: Path) -> tuple[str | None, dict[str, Any] | None]:
    """``run.storage`` and ``run.storage_options`` of a run's ``config.yaml`` (None each when unset)."""
    import yaml

    run = (yaml.safe_load(config.read_text()) or {}).get("run") or {}
    return run.get("storage"), run.get("storage_options")


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
