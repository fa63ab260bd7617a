"""``swarm absorb``: pour outside PEFT LoRA adapters into a run's shared level, guarded.

1. The run's config and the target server (``--level domain``, or ``--server swarm/text``
   when a level has several servers). Its levels are read from the live level servers when
   the run is running (Ray), else recovered from the run's level stores.
2. Each adapter is projected into the level's read space (``layers.peft_io.project_peft``);
   the energy kept per module and in total is reported, and adapter modules the stack does
   not adapt are listed. Several adapters are grouped by similarity (``layers.absorb``).
3. The guard: a local model with the target level and the levels above it evaluates the
   probe set (held-out windows of every agent of the run) before and after the change.
   If the probe set loses more than ``absorb.max_degradation`` bits per byte (with every
   level, or with a changed level alone), the absorb is rolled back: nothing reaches the
   server, whose level stays exactly as it was. ``--dry-run`` stops here too.
4. Otherwise the delta goes through the server (``LevelCore.absorb``): validated,
   journaled, checkpointed, one version, like a merge.

With ``--grow N`` (``absorb.grow``) the local stack first grows every module's read space by N rows
holding the adapters' top read directions P does not span (``layers.absorb.absorb_growth``), projects into the
grown space (the report gives the energy kept with and without the growth) and runs the guard on
the grown model. Only a committed absorb sends the growth (rows carried in the event) to every
server of the run, top first, then the delta; a rollback or a dry run sends nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agents.model import build_model
from agents.text import Tokenizer, Windows, eval_windows, load_tokenizer
from agents.workload import Workload
from cluster.level.growth import pad_columns
from cluster.level.protocol import PushResult
from cluster.topology import Topology
from layers import LevelStack
from layers.absorb import add, degradation, fingerprint, logits_distance, plan_merge, split_shared
from layers.peft_io import project_peft
from swarm.rundir import RunDir


class StoreLevels:
    """A finished (or stopped) run's level servers, recovered from their stores in this process."""

    def __init__(self, run_dir: str | Path | RunDir, cfg, topology: Topology) -> None:
        run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        from cluster.build import build_core, level_shapes, level_specs
        from swarm.config import config_hash

        shapes = level_shapes(cfg.model, cfg.levels)
        specs = level_specs(topology, server=cfg.server, merge=cfg.merge, dynamics=cfg.dynamics,
                            circuits=cfg.circuits, stores=run_dir.level_store, config_hash=config_hash(cfg))
        # built as `swarm run` builds them (cluster.build), so the journals replay the same
        self.servers = {spec.name: build_core(spec, shapes) for spec in specs}

    def level(self, name: str) -> tuple[int, dict[str, torch.Tensor]]:
        core = self.servers[name]
        return core.version, {m: t.clone() for m, t in core.B.items()}

    def absorb(self, name: str, tensors: dict[str, torch.Tensor], source: str) -> PushResult:
        return self.servers[name].absorb(tensors, source)

    def growths(self, name: str) -> list:
        """The growths of the read space ``name`` applied, in order."""
        return [e for _, e in self.servers[name].growths]

    def grow(self, name: str, event) -> PushResult:
        """Journal a growth of the read space at ``name`` (a no-op if it is already past it)."""
        return self.servers[name].grow(event)


class LiveLevels:
    """A running swarm's level server actors."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _actor(self, name: str):
        import ray

        return ray.get_actor(name, namespace=self.namespace)

    def level(self, name: str) -> tuple[int, dict[str, torch.Tensor]]:
        import ray

        out = ray.get(self._actor(name).pull.remote(-1))
        return out["version"], out["tensors"]

    def absorb(self, name: str, tensors: dict[str, torch.Tensor], source: str) -> PushResult:
        import ray

        return ray.get(self._actor(name).absorb.remote(tensors, source))

    def growths(self, name: str) -> list:
        """The growths of the read space ``name`` applied, in order."""
        import ray

        return list(ray.get(self._actor(name).pull.remote(-1)).get("growths", []))

    def grow(self, name: str, event) -> PushResult:
        """Journal a growth at the server actor ``name`` (agents hand it on to the others as they pull)."""
        from cluster.actors import RemoteLevel
        from cluster.level.growth import send_growth

        send_growth(RemoteLevel(self._actor(name)), event)
        return PushResult.ok(-1)


def resolve_target(topology: Topology, level: str | None, server: str | None) -> str:
    """The server an absorb goes to: ``server`` by name, or the only server of ``level``."""
    names = [s.name for s in topology.servers]
    if server is not None:
        if server not in names:
            raise ValueError(f"--server {server!r}: not a level server of this run (servers: {names})")
        return server
    candidates = [s.name for s in topology.servers if s.level == level]
    if not candidates:
        raise ValueError(f"--level {level!r}: not a shared level of this run (shared levels: {topology.levels}); "
                         "the context and agent levels live inside the agents")
    if len(candidates) > 1:
        raise ValueError(f"--level {level!r} has {len(candidates)} servers ({', '.join(candidates)}): "
                         "pick one with --server")
    return candidates[0]


def probe_windows(cfg, topology: Topology, per_agent: int, tokenizer: Tokenizer) -> Windows:
    """The probe set: the first ``per_agent`` held-out windows of every agent of the run."""
    return Windows.cat([Workload(cfg.workload, spec, tokenizer).held_out[:per_agent] for spec in topology.agents])


def compose(deltas: list[dict], names: list[str], acfg, has_slower: bool) -> tuple[dict, dict, list[dict]]:
    """The target level's delta, the slower level's, and one decision record per group of adapters."""
    decision = plan_merge(deltas, acfg.merge_threshold, acfg.split_threshold)
    target, slower, records = [], [], []
    for members, kind in zip(decision.groups, decision.kinds, strict=True):
        group = [deltas[i] for i in members]
        sims = {f"{names[i]} ~ {names[j]}": round(decision.similarity[i][j], 4)
                for a, i in enumerate(members) for j in members[a + 1:]}
        if kind == "moderate" and has_slower:
            shared, residuals = split_shared(group)
            slower.append(shared)
            target.extend(residuals)
            action = "split: the common part to the slower level, the residuals here"
        else:
            target.append(add(group))
            action = {"similar": "merged (task arithmetic)", "apart": "absorbed on its own",
                      "moderate": "merged (no slower level to split into)"}[kind]
        records.append({"adapters": [names[i] for i in members], "kind": kind, "similarity": sims,
                        "action": action})
    return add(target) if target else {}, add(slower) if slower else {}, records


def adapter_growth(stack: LevelStack, adapters: list[str], rows: int):
    """The growth that keeps ``adapters`` (:func:`layers.absorb.absorb_growth`): their read directions,
    stacked per module, and ``rows`` new rows per module."""
    from layers.absorb import absorb_growth, adapter_scale, read_directions
    from layers.peft_io import read_adapter

    directions: dict[str, list[torch.Tensor]] = {}
    for path in adapters:
        config, pairs, _ = read_adapter(path)
        for name, (a, b) in pairs.items():
            if name in stack.modules and a.shape[1] == stack.modules[name].in_features:
                directions.setdefault(name, []).append(read_directions(a, b, adapter_scale(config, name, a.shape[0])))
    return absorb_growth(stack, {m: torch.cat(d) for m, d in directions.items()}, rows,
                         source="absorb:" + ",".join(Path(a).name for a in adapters))


def absorb(run_dir: str | Path, adapters: list[str], *, level: str | None = None, server: str | None = None,
           dry_run: bool = False, overrides: list[str] = (), eval_file: str | None = None,
           grow: int | None = None) -> dict[str, Any]:
    """Absorb ``adapters`` into a shared level of the run in ``run_dir``; returns the report (see module doc).
    ``eval_file``: a file whose bytes are also scored before and after (what the adapters bring; the
    guard does not use it). ``grow`` (or ``absorb.grow=N`` in ``overrides``): first grow every module's
    read space by N rows holding the adapters' top read directions P does not span, so far more of
    their energy is kept; the growth reaches the servers only when the absorb is committed."""
    import transformers

    from swarm.config import load_config

    transformers.utils.logging.disable_progress_bar()  # loading a local base is instant: no bars in the report
    run = RunDir(run_dir).require_run()
    cfg = load_config(run.config, list(overrides))
    rows = cfg.absorb.grow if grow is None else int(grow)
    if rows < 0:
        raise ValueError(f"absorb.grow: need a number of rows >= 0, got {rows}")
    acfg = cfg.absorb
    topology = Topology(cfg.workload, cfg.levels.names[2:])
    target = resolve_target(topology, level, server)
    chain = [target]  # the target and the servers above it: what the model runs with
    parents = {s.name: s.parent for s in topology.servers}
    while parents[chain[-1]] is not None:
        chain.append(parents[chain[-1]])
    live = run.read_status().get("state") == "running"
    if live:
        import ray

        from swarm.ray_session import join_ray, run_ray_address

        if not ray.is_initialized():
            join_ray(run.namespace, run_ray_address(run))
        levels = LiveLevels(run.namespace)
    else:
        levels = StoreLevels(run, cfg, topology)
    model = build_model(cfg.model)
    stack = LevelStack.attach(model, cfg.levels)
    for event in max((levels.growths(name) for name in chain), key=len):  # the run's read space as it is now
        stack.apply_growth(event)
    versions = {}
    for name in chain:
        versions[name], state = levels.level(name)
        stack.load_level_state(name.split("/")[0], {m: pad_columns(t, stack.rank) for m, t in state.items()})
    kept_before = {str(a): project_peft(stack, a)[1].energy_kept for a in adapters}  # without growth
    growth = None
    if rows:
        growth = adapter_growth(stack, [str(a) for a in adapters], rows)
        stack.apply_growth(growth)  # local: the guard judges the grown model; servers get it on commit
    projected = [(str(a), *project_peft(stack, a)) for a in adapters]  # (name, deltas, ImportReport)
    names = [p[0] for p in projected]
    target_delta, slower_delta, groups = compose([p[1] for p in projected], names, acfg, len(chain) > 1)
    changes = {chain[0]: target_delta, **({chain[1]: slower_delta} if slower_delta else {})}
    tokenizer = load_tokenizer(cfg.model)
    windows = probe_windows(cfg, topology, acfg.probe_windows, tokenizer)
    held = [name.split("/")[0] for name in chain]  # the levels this model holds (the others are zero here)
    task = None
    if eval_file is not None:
        text = Path(eval_file).read_text(encoding="utf-8", errors="replace")
        task = eval_windows([tokenizer.encode_with_bytes(text)], cfg.workload.seq_len, 64)
        task_before = fingerprint(model, stack, task.ids, [], window_bytes=task.target_bytes)
    before = fingerprint(model, stack, windows.ids, held, window_bytes=windows.target_bytes)
    saved = {name: stack.level_state(name.split("/")[0]) for name in changes}
    with torch.no_grad():
        for name, delta in changes.items():
            for m, t in delta.items():
                b = stack.modules[m].B[name.split("/")[0]]
                b.add_((acfg.strength * t).to(b))
    after = fingerprint(model, stack, windows.ids, held, window_bytes=windows.target_bytes)
    task_after = (fingerprint(model, stack, task.ids, [], window_bytes=task.target_bytes)
                  if task is not None else None)
    for name, state in saved.items():  # the local copy goes back exactly; the server decides below
        stack.load_level_state(name.split("/")[0], state)
    deg = degradation(before, after, [n.split("/")[0] for n in changes])
    worst = max(deg.values())
    report = {"run": str(run_dir), "target": target, "live": live, "versions_before": versions,
              "strength": acfg.strength,
              "adapters": [{"adapter": n, "energy_kept": r.energy_kept, "energy_kept_without_growth": kept_before[n],
                            "per_module": r.per_module, "unmatched": r.unmatched, "ignored_keys": r.ignored_keys}
                           for n, _, r in projected],
              "growth": None if growth is None else {"from_rank": growth.from_rank, "to_rank": growth.to_rank,
                                                     "rows_carried": len(growth.rows), "id": growth.id},
              "groups": groups, "changed": sorted(changes), "probe_windows": len(windows),
              "bpb_before": before.bpb, "bpb_after": after.bpb, "degradation": deg,
              "logits_kl_bits": logits_distance(before, after), "max_degradation": acfg.max_degradation}
    if task is not None:
        report["eval_file"] = {"file": str(eval_file), "windows": len(task),
                               "bpb_before": task_before.bpb["all"], "bpb_after": task_after.bpb["all"]}
    if worst > acfg.max_degradation:
        report["outcome"] = "rolled back"
        report["why"] = (f"the probe set lost {worst:.4f} bits/byte ({max(deg, key=deg.get)}), above "
                         f"absorb.max_degradation = {acfg.max_degradation}; the level is unchanged")
    elif dry_run:
        report["outcome"] = "dry run"
        report["why"] = "nothing was written (--dry-run)"
    else:
        results = {}
        if growth is not None:  # every server, top first: they all share the read space
            for name in reversed([s.name for s in topology.servers]):
                grown = levels.grow(name, growth)
                if not grown.accepted:
                    raise ValueError(f"{name} refused the growth: {grown.reason}")
        for name, delta in changes.items():
            tensors = {m: (acfg.strength * t).float() for m, t in delta.items()}
            results[name] = levels.absorb(name, tensors, ",".join(names))
            if not results[name].accepted:
                raise ValueError(f"{name} refused the absorb: {results[name].reason}")
        report["outcome"] = "absorbed"
        report["versions_after"] = {n: r.version for n, r in results.items()}
        report["why"] = f"the probe set moved by at most {worst:+.4f} bits/byte"
    return report


def render(report: dict[str, Any], console) -> None:
    """Print an absorb report: energy kept, grouping, the guard's numbers, the outcome."""
    from rich.table import Table

    t = Table(title=f"absorb into {report['target']} (strength {report['strength']:g})")
    grown = report.get("growth")
    for col in ("adapter", *(["kept without growth"] if grown else []), "energy kept", "modules", "lowest module",
                "not adapted here"):
        t.add_column(col)
    for a in report["adapters"]:
        low = min(a["per_module"].items(), key=lambda kv: kv[1]) if a["per_module"] else ("-", 1.0)
        t.add_row(a["adapter"], *([f"{a['energy_kept_without_growth']:.1%}"] if grown else []),
                  f"{a['energy_kept']:.1%}", str(len(a["per_module"])), f"{low[0]} {low[1]:.1%}",
                  ", ".join(a["unmatched"]) or "-")
    console.print(t)
    if grown:
        console.print(f"read space grown: rank {grown['from_rank']} -> {grown['to_rank']} "
                      f"(adapter directions carried for {grown['rows_carried']} modules)")
    for g in report["groups"]:
        sims = ", ".join(f"{k}: {v:.3f}" for k, v in g["similarity"].items())
        console.print(f"{' + '.join(g['adapters'])}: {g['kind']}" + (f" (cosine {sims})" if sims else "")
                      + f" -> {g['action']}")
    f = Table(title=f"probe set ({report['probe_windows']} held-out windows of the run's agents), bits/byte")
    for col in ("levels", "before", "after", "change"):
        f.add_column(col)
    for k, v in report["bpb_before"].items():
        f.add_row(k, f"{v:.4f}", f"{report['bpb_after'][k]:.4f}", f"{report['bpb_after'][k] - v:+.4f}")
    console.print(f)
    console.print(f"logits KL(before || after): {report['logits_kl_bits']:.5f} bits per byte position")
    if "eval_file" in report:
        e = report["eval_file"]
        console.print(f"{e['file']} ({e['windows']} windows): {e['bpb_before']:.4f} -> {e['bpb_after']:.4f} "
                      f"bits/byte with the change ({e['bpb_after'] - e['bpb_before']:+.4f})")
    console.print(f"[bold]{report['outcome']}[/bold]: {report['why']}")
