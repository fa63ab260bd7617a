"""``swarm experiment``: plan the jobs, run them side by side in worker processes, write the report.

Each worker process runs one job at a time with one torch thread (on 2 cores two
processes beat one process with two threads for models this small). Results land in
``<run_dir>/jobs/<id>.json`` as jobs finish; running the same command again (same
``experiment.name``) skips the finished jobs, so an interrupted experiment resumes.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from swarm.experiment.jobs import Job, job_config, plan, run_job


def _init_worker() -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it ends the workers)
    import transformers

    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _work(config: str, overrides: list[str], job: Job) -> dict:
    return run_job(config, overrides, job)


def check_packages(cfg) -> None:
    """Every file an experiment's agents read must be outside the base's pretraining corpus: stdlib
    agents by package name (none inside another), code agents (site-packages) by path and content."""
    from swarm.tools.pretrain import packages_overlap

    exp = cfg.experiment
    used = {exp.join.agent, *exp.switch.packages} | {a for s in exp.attack.topology.values() for x in s.values()
                                                      for a in x}
    if cfg.workload.kind == "code":
        check_code_disjoint(cfg)
    else:
        used |= {a for s in cfg.workload.teams.values() for x in s.values() for a in x}
    clash = sorted((p, a) for p in cfg.pretrain.packages for a in used if packages_overlap(p, a))
    if clash:
        raise ValueError(f"experiment: the agent package {clash[0][1]!r} overlaps the pretraining package "
                         f"{clash[0][0]!r}; the base must not have seen any agent's files")


def check_code_disjoint(cfg) -> int:
    """Refuse a code workload that shares a file (same path or same bytes) with the pretraining corpus;
    returns the number of workload files checked."""
    import hashlib

    from agents.sources import stdlib_documents
    from agents.sources.code import code_files

    pre = stdlib_documents(cfg.pretrain.packages)
    corpus = {p.resolve(): hashlib.sha256(p.read_bytes()).hexdigest() for part in (pre.train, pre.held_out)
              for p in part.paths}
    digests = {d: p for p, d in corpus.items()}
    n = 0
    for domain, agent in code_agents(cfg):
        for path in code_files(domain, agent):  # a package that is not installed is refused here, up front
            n += 1
            twin = corpus.get(path.resolve()) and path or digests.get(hashlib.sha256(path.read_bytes()).hexdigest())
            if twin:
                raise ValueError(f"experiment: {path} (agent {agent!r}) is in the base's pretraining corpus "
                                 f"({twin}); the base must not have seen any agent's files")
    return n


def code_agents(cfg) -> list[tuple[str, str]]:
    """(language, dotted path) of everything an experiment's agents read on a code workload: the topology's
    agents, the joiner (in its team's language) and the switch packages (each in the language of the agent
    that moves to it, in agent order), when those scenarios run."""
    from agents.topology import agent_specs

    specs, exp = agent_specs(cfg.workload), cfg.experiment
    pairs = [(s.domain, s.name) for s in specs]
    if "join" in exp.scenarios:
        team = next((s for s in specs if s.swarm == exp.join.team), None)
        if team is None:
            raise ValueError(f"experiment.join.team: {exp.join.team!r} is not a team of the workload "
                             f"({', '.join(sorted({s.swarm for s in specs}))})")
        pairs.append((team.domain, exp.join.agent))
    if "switch" in exp.scenarios:
        pairs += [(s.domain, exp.switch.packages[i % len(exp.switch.packages)]) for i, s in enumerate(specs)]
    return list(dict.fromkeys(pairs))


def run_dir_for(cfg) -> Path:
    exp = cfg.experiment
    return Path(exp.out_dir) / (exp.name or time.strftime("%Y%m%d-%H%M%S"))


def run_experiment(config: str, overrides: list[str], *, console: Console | None = None) -> Path:
    """Run (or resume) the experiment of ``config`` + ``overrides``; returns its run directory."""
    from swarm.config import config_hash, load_config, to_yaml
    from swarm.experiment.report import write_report
    from swarm.tools.pretrain import pretrain_base

    console = console or Console()
    cfg = load_config(config, overrides)
    check_packages(cfg)
    base = pretrain_base(cfg, progress=console.is_terminal, echo=console.print)  # cached by content
    overrides = [*overrides, f"model.name_or_path={base}"]
    cfg = load_config(config, overrides)
    run_dir = run_dir_for(cfg)
    (run_dir / "jobs").mkdir(parents=True, exist_ok=True)
    stamp = {"config": str(config), "overrides": overrides[:-1], "base": str(base), "hash": config_hash(cfg),
             "experiment": json.loads(json.dumps(_plain(cfg.experiment))),
             "defaults": {"traces": cfg.circuits.traces, "server_lr": cfg.server.lr,
                          "switch_steps": cfg.experiment.switch.steps,
                          "phase": [cfg.dynamics.phase.theta_on, cfg.dynamics.phase.theta_off]}}
    stamp_file = run_dir / "experiment.json"
    if stamp_file.is_file():
        old = json.loads(stamp_file.read_text())
        if {k: old.get(k) for k in ("hash", "experiment")} != {k: stamp[k] for k in ("hash", "experiment")}:
            raise ValueError(f"{run_dir}: holds an experiment with another config; pick another experiment.name "
                             "or remove the directory")
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n")
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    jobs = plan(cfg)
    todo = [j for j in jobs if not (run_dir / "jobs" / j.file).is_file()]
    for job in todo:  # a job's settings that cannot work are refused before any job starts
        job_config(config, overrides, job)
    console.print(f"experiment {run_dir}: {len(jobs)} jobs ({len(jobs) - len(todo)} done already), "
                  f"{sum(j.agent_steps for j in todo)} agent steps to run")
    failures = _run_pool(config, overrides, todo, run_dir, cfg.experiment.workers or os.cpu_count() or 1, console)
    report = write_report(run_dir)
    console.print(f"report: {report}")
    if failures:
        raise RuntimeError(f"{len(failures)} job(s) failed ({', '.join(failures[:3])}...); "
                           f"see {run_dir}/jobs/*.error.txt")
    return run_dir


def _plain(obj):
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _run_pool(config: str, overrides: list[str], todo: list[Job], run_dir: Path, workers: int,
              console: Console) -> list[str]:
    failures: list[str] = []
    if not todo:
        return failures
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("agent steps"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console) as bar, ProcessPoolExecutor(
            max_workers=min(workers, len(todo)), mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        task = bar.add_task(f"jobs 0/{len(todo)}", total=sum(j.agent_steps for j in todo))
        pending = {pool.submit(_work, config, overrides, job): job for job in todo}
        try:
            _collect(pending, run_dir, bar, task, len(todo), failures, console)
        except KeyboardInterrupt:  # finished jobs are on disk; end the running ones, keep nothing half-done
            workers = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in workers:
                proc.terminate()
            raise
    return failures


def _collect(pending: dict, run_dir: Path, bar: Progress, task, total: int, failures: list[str],
             console: Console) -> None:
    done = 0
    while pending:
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in finished:
            job = pending.pop(fut)
            done += 1
            try:
                result = fut.result()
            except Exception:  # one failed job must not lose the others: record it, go on
                failures.append(job.id)
                (run_dir / "jobs" / (job.file[:-5] + ".error.txt")).write_text(traceback.format_exc())
                console.print(f"[red]job {job.id} failed[/red]")
            else:
                tmp = run_dir / "jobs" / (job.file + ".tmp")
                tmp.write_text(json.dumps(result) + "\n")
                os.replace(tmp, run_dir / "jobs" / job.file)
                console.print(f"{job.id}: {result['seconds']:.0f} s")
            bar.update(task, advance=job.agent_steps, description=f"jobs {done}/{total}")
