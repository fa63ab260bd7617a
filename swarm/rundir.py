"""The run directory: the one owner of its layout, its Ray namespace and its status file.

A run directory (``runs/<name>/`` by default) holds:

- ``config.yaml``: the resolved config (``--resume`` reads it back);
- ``metrics.jsonl``: one JSON record per agent chunk and server poll;
- ``status.json``: the live snapshot ``swarm status`` shows (written atomically);
- ``levels/<server>/``: each level server's checkpoints and journal;
- ``agents/<agent id>/``: each agent's checkpoints;
- ``summary.json`` + ``summary.md``: written when the run ends.

Importing this module loads neither torch nor Ray (``swarm status`` stays fast).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT_DIR = "runs"
LIVE_STATES = ("starting", "running")


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
        tmp = self.status.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(snapshot, default=str))
        os.replace(tmp, self.status)


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
