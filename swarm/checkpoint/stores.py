"""The stores of a run directory, found on disk, described and verified (no Ray, no model).

A store is a directory under ``levels/`` (a level server, e.g. ``levels/swarm/red``) or
``agents/`` (an agent, e.g. ``agents/python/text/json``) holding checkpoints, journal
segments or a lineage log (:mod:`cluster.store`). A target ``RUN_DIR[/STORE]`` names a run
directory (the nearest directory up the path holding ``config.yaml``), optionally followed
by one store: its path under the run (``levels/swarm/red``), or its server or agent name
(``swarm/red``, ``foundation``, ``python/text/json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.lineage import Lineage, LineageRecord
from cluster.store import LevelStore
from swarm.config import SwarmConfig, config_hash, load_config
from swarm.rundir import RunDir


class CheckpointError(ValueError):
    """A bad target, store, checkpoint or fork request; the message names the input at fault."""


@dataclass(frozen=True)
class StoreRef:
    """One store of a run: ``name`` (its path under the run, e.g. ``levels/swarm/red``) and ``path``."""

    name: str
    path: Path

    @property
    def kind(self) -> str:
        """``level`` (a level server's store) or ``agent``."""
        return "level" if self.name.startswith("levels/") else "agent"


def _is_store(path: Path) -> bool:
    return any(path.glob("ckpt-*")) or any(path.glob("journal-*.log")) or (path / "lineage.log").exists()


def find_stores(run: RunDir) -> list[StoreRef]:
    """Every store under ``levels/`` and ``agents/`` of ``run``, level servers first, by name."""
    found = []
    for top in ("levels", "agents"):
        root = run.path / top
        if root.is_dir():
            found += [StoreRef(d.relative_to(run.path).as_posix(), d) for d in sorted(root.rglob("*"))
                      if d.is_dir() and not d.name.startswith((".", "ckpt-")) and _is_store(d)]
    return found


def resolve(target: str | Path) -> tuple[RunDir, list[StoreRef], bool]:
    """``(run, stores, whole)`` for ``RUN_DIR[/STORE]``; ``whole``: no store was named (every store).

    Raises :class:`CheckpointError` when no run directory holds the path, or naming the store that
    is not there (with the stores that are).
    """
    path = Path(target)
    run_path = next((p for p in [path, *path.parents] if (p / "config.yaml").is_file()), None)
    if run_path is None:
        raise CheckpointError(f"{target}: not in a run directory (no config.yaml here or above)")
    run = RunDir(run_path)
    stores = find_stores(run)
    rest = path.relative_to(run_path).as_posix()
    if rest == ".":
        return run, stores, True
    matches = [s for s in stores if s.name == rest] or [s for s in stores if s.name in (f"levels/{rest}",
                                                                                      f"agents/{rest}")]
    if len(matches) != 1:
        known = ", ".join(s.name for s in stores) or "none"
        why = "names several stores" if matches else "is no level server or agent store"
        raise CheckpointError(f"{target}: {rest!r} {why} of the run {run_path} (its stores: {known})")
    return run, matches, False


def run_config(run: RunDir) -> tuple[SwarmConfig, str]:
    """The run's resolved config and its config hash (``CheckpointError`` when it does not load)."""
    try:
        cfg = load_config(run.config)
    except (OSError, ValueError) as e:  # ConfigError too
        raise CheckpointError(f"{run.config}: {e}") from e
    return cfg, config_hash(cfg)


def open_store(ref: StoreRef, config_hash_: str) -> LevelStore:
    """The store of ``ref`` read under ``config_hash_`` (nothing is written by reading it)."""
    return LevelStore(ref.path, config_hash=config_hash_)


def store_size(ref: StoreRef) -> int:
    """Bytes on disk of the store (checkpoints, journal, lineage)."""
    return sum(p.stat().st_size for p in ref.path.rglob("*") if p.is_file())


def record_json(r: LineageRecord) -> dict[str, Any]:
    """A lineage record as ``show --json`` prints it: its fields plus ``kept`` and ``path``."""
    return {**r.to_json(), "kept": r.path is not None, "path": str(r.path) if r.path else None}


def describe(ref: StoreRef, config_hash_: str) -> dict[str, Any]:
    """``show``'s view of one store: its lineage (oldest first), whether it reaches the first
    checkpoint, the newest checkpoint, size on disk and warnings."""
    lineage: Lineage = open_store(ref, config_hash_).lineage()
    return {"store": ref.name, "kind": ref.kind, "complete": lineage.complete, "size": store_size(ref),
            "newest": record_json(lineage.records[-1]) if lineage.records else None,
            "lineage": [record_json(r) for r in lineage.records], "warnings": lineage.warnings}


def verify_store(ref: StoreRef, cfg: SwarmConfig, config_hash_: str) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` of one store: every kept checkpoint re-hashed against its id and checked
    against the run's config hash and ``levels.rank`` (the projection), every journal segment parsed,
    the lineage log read. Notes are what is worth saying but not wrong (a store from before lineage)."""
    store = open_store(ref, config_hash_)
    problems = [f"{ref.path}/{p}" for p in store.check_journal()]
    lineage = store.lineage()
    notes = [f"{ref.path}: {w}" for w in lineage.warnings if w.startswith("no lineage.log")]
    problems += [f"{ref.path}/{w}" for w in lineage.warnings if not w.startswith("no lineage.log")]
    for r in lineage.records:
        if r.path is None:
            continue
        problems += store.check_checkpoint(r.path)
        problems += _rank_problems(r.path, cfg)
    for older, newer in zip(lineage.records, lineage.records[1:], strict=False):
        if newer.parent is not None and older.path is not None and newer.path is not None and newer.parent != older.id:
            problems.append(f"{newer.path / 'manifest.json'}: parent {newer.parent[:16]}... is not the checkpoint "
                            f"before it ({older.path.name}, id {older.id[:16]}...)")
    return problems, notes


def _rank_problems(path: Path, cfg: SwarmConfig) -> list[str]:
    """The modules whose B in this checkpoint has another rank than P's rows: the config's ``levels.rank``
    raised by the growths the checkpoint records (``meta.state.growths``, each starting where the last
    one ended)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path / "tensors.safetensors"), framework="pt") as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        meta = json.loads((path / "manifest.json").read_text()).get("meta") or {}
    except Exception:  # noqa: BLE001 - unreadable: check_checkpoint already says so
        return []
    rank, grown = cfg.levels.rank, []
    for g in (meta.get("state") or {}).get("growths") or []:
        if g.get("from_rank") != rank:
            return [f"{path / 'manifest.json'}: a growth {g.get('from_rank')}->{g.get('to_rank')} does not start "
                    f"at rank {rank} (levels.rank={cfg.levels.rank}, then {', '.join(grown) or 'no growth'})"]
        grown.append(f"{g['from_rank']}->{g['to_rank']}")
        rank = g["to_rank"]
    bad = sorted((k, s[-1]) for k, s in shapes.items() if len(s) == 2 and s[-1] != rank
                 and (k.split("/")[0], k.count("/")) in (("B", 1), ("levels", 2)))
    if not bad:
        return []
    name, found = bad[0]
    since = f" grown by {', '.join(grown)} to {rank}" if grown else ""
    return [f"{path / 'tensors.safetensors'}: {len(bad)} write matrices have rank {found} (e.g. {name!r}), the run's "
            f"config has levels.rank={cfg.levels.rank}{since}: another read projection P"]
