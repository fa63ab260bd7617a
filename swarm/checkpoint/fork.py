"""``swarm checkpoint fork``: a new run directory that starts from chosen checkpoints of a run.

The fork holds the run's ``config.yaml`` (with ``run.*``/``serve.*`` overrides applied, if any),
for every store the chosen checkpoint directory (copied, never the journal: the fork's state is
exactly that checkpoint) and the lineage of that checkpoint (so its ancestors stay listed), and
``fork.json`` saying where each store came from. It is built in a hidden temporary directory
next to the target, fsynced, then renamed into place, so a crash never leaves half a fork.
``swarm run --resume NEW_RUN_DIR`` then recovers every store from the checkpoint it was given.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cluster.lineage import LineageRecord, append_lineage
from cluster.storage import fsync_dir
from swarm.checkpoint.stores import CheckpointError, StoreRef, find_stores, open_store, resolve, run_config
from swarm.config import SwarmConfig, config_hash, load_config, to_yaml

FREE_SECTIONS = ("run", "serve")  # what a fork may change: how long and how a run goes, not what it learned
MIN_PREFIX = 6  # hex digits of an id prefix that --checkpoint accepts


def _forked_config(run_config_path: Path, cfg: SwarmConfig, overrides: list[str]) -> SwarmConfig:
    """The fork's config: the run's, with ``overrides`` that may touch only ``run.*`` and ``serve.*``."""
    bad = [o for o in overrides if o.split("=", 1)[0].split(".", 1)[0] not in FREE_SECTIONS]
    if bad:
        raise CheckpointError(f"fork: {bad[0]!r} would change what the checkpoints learned under; only "
                              f"{', '.join(s + '.*' for s in FREE_SECTIONS)} may change on a fork")
    try:
        new = load_config(run_config_path, overrides)
    except (OSError, ValueError) as e:  # ConfigError too
        raise CheckpointError(f"fork: {e}") from e
    if config_hash(new) != config_hash(cfg):  # a free key the hash covers after all: refuse rather than guess
        raise CheckpointError(f"fork: the overrides {overrides} change the config hash; the checkpoints could "
                              "not be resumed under it")
    return new


def _pick(ref: StoreRef, hash_: str, checkpoint: str | None, explicit: bool) -> tuple[LineageRecord | None, list[str]]:
    """The checkpoint of ``ref`` to fork from and notes. ``checkpoint`` (an id or a prefix) when given;
    else the newest kept one that verifies (on ``explicit`` stores a corrupt newest one is refused)."""
    store = open_store(ref, hash_)
    lineage = store.lineage()
    kept = [r for r in lineage.records if r.path is not None]
    if checkpoint is not None:
        if len(checkpoint) < MIN_PREFIX:
            raise CheckpointError(f"--checkpoint {checkpoint!r}: give at least {MIN_PREFIX} hex digits of the id")
        hits = [r for r in lineage.records if r.id.startswith(checkpoint)]
        if not hits:
            known = ", ".join(f"{r.id[:12]} (version {r.version})" for r in kept) or "none"
            raise CheckpointError(f"{ref.name}: no checkpoint {checkpoint!r} (kept: {known})")
        if len({r.id for r in hits}) > 1:
            raise CheckpointError(f"{ref.name}: --checkpoint {checkpoint!r} matches several ids: "
                                  + ", ".join(r.id[:16] for r in hits))
        pick = hits[-1]
        if pick.path is None:
            raise CheckpointError(f"{ref.name}: checkpoint {pick.id[:12]} (version {pick.version}) was pruned; only "
                                  "its lineage record is left (kept: "
                                  + ", ".join(f"{r.id[:12]} (version {r.version})" for r in kept) + ")")
        candidates = [pick]
    else:
        candidates = list(reversed(kept))
    notes: list[str] = []
    for r in candidates:
        if r.config_hash != hash_:  # another config: a fork would not resume under the run's config
            raise CheckpointError(f"{r.path / 'manifest.json'}: written under config hash {r.config_hash[:16]}..., "
                                  f"the run's config.yaml hashes to {hash_[:16]}...: a fork would not resume")
        problems = store.check_checkpoint(r.path)
        if not problems:
            return r, notes
        if explicit or checkpoint is not None:
            raise CheckpointError(f"{ref.name}: cannot fork from {r.path.name}, it is corrupt: " + "; ".join(problems))
        notes.append(f"{ref.name}: skipped {r.path.name} ({'; '.join(problems)})")
    notes.append(f"{ref.name}: no checkpoint that verifies; the fork starts this store empty")
    return None, notes


def _ancestors(records: list[LineageRecord], pick: LineageRecord) -> list[LineageRecord]:
    """``pick`` and its ancestors as far as the lineage goes, oldest first."""
    by_id = {r.id: r for r in records if r.version < pick.version}
    chain, node = [pick], pick
    while node.parent is not None and node.parent in by_id and by_id[node.parent].version < node.version:
        node = by_id[node.parent]
        chain.append(node)
    return chain[::-1]


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            fsync_dir(path)
    fsync_dir(root)


def fork(target: str | Path, to: str | Path, *, checkpoint: str | None = None,
         overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Fork ``target`` (``RUN_DIR`` or ``RUN_DIR/STORE``) into the new run directory ``to``.

    ``RUN_DIR``: every store from its newest checkpoint that verifies. ``RUN_DIR/STORE``: that store
    from ``checkpoint`` (an id or a unique prefix; default its newest), every other from its newest.
    Returns the report written to ``fork.json``. Raises :class:`CheckpointError` for an unknown store
    or checkpoint id, a pruned or corrupt chosen checkpoint, an existing ``to``, overrides outside
    ``run.*``/``serve.*``, or a checkpoint written under another config hash than the fork's config.
    """
    run, chosen, whole = resolve(target)
    if checkpoint is not None and whole:
        raise CheckpointError(f"--checkpoint {checkpoint}: checkpoint ids belong to one store; name it, e.g. "
                              f"{run.path}/swarm/<team> (see `swarm checkpoint show {run.path}`)")
    dest = Path(to)
    if dest.exists():
        raise CheckpointError(f"--to {dest}: already exists; a fork starts a new run directory")
    cfg, hash_ = run_config(run)
    new_cfg = _forked_config(run.config, cfg, list(overrides)) if overrides else cfg
    stores, notes, plan = find_stores(run), [], []
    for ref in stores:
        explicit = not whole and ref == chosen[0]
        pick, said = _pick(ref, hash_, checkpoint if explicit else None, explicit)
        notes += said
        plan.append((ref, pick))
    tmp = dest.parent / f".{dest.name}.fork-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        (tmp / "config.yaml").write_text(to_yaml(new_cfg) if overrides else run.config.read_text())
        report = {"source": str(run.path), "created": time.time(), "overrides": list(overrides), "notes": notes,
                  "stores": {}}
        for ref, pick in plan:
            if pick is None:
                report["stores"][ref.name] = None
                continue
            target_dir = tmp / ref.name
            target_dir.mkdir(parents=True)
            shutil.copytree(pick.path, target_dir / pick.path.name)
            for rec in _ancestors(open_store(ref, hash_).lineage().records, pick):
                append_lineage(target_dir, rec)
            report["stores"][ref.name] = {"id": pick.id, "version": pick.version, "checkpoint": pick.path.name}
        (tmp / "fork.json").write_text(json.dumps(report, indent=2) + "\n")
        _fsync_tree(tmp)
        os.rename(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**report, "to": str(dest)}

