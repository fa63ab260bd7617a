"""The ``swarm run`` command: start or resume a run (a resume may change only ``run.*`` and ``serve.*``),
drive it with live tables or plain progress lines and the optional query service beside it, and
finish it with the final checkpoint and summary. The run itself: :class:`swarm.run.driver.Run`."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from agents.model import check_seq_len
from agents.sources import check_workload
from cluster.topology import Topology
from swarm.config import ConfigError, SwarmConfig, check_growth, config_hash, load_config, to_yaml
from swarm.console import wide_console
from swarm.run.display import LiveView
from swarm.run.driver import Run
from swarm.run.signals import ForcedStop, RunStopped, StopSignals, describe
from swarm.rundir import RunDir, new_run_dir


def _check_resumable(original: SwarmConfig, cfg: SwarmConfig, run_dir: Path) -> None:
    """Overrides on resume may change how long and how a run goes (run, serve), not what it learned."""
    if config_hash(original) == config_hash(cfg):
        return
    from omegaconf import OmegaConf

    a, b = (OmegaConf.to_container(OmegaConf.structured(c)) for c in (original, cfg))
    free = ("run", "serve", "demo", "pretrain")  # the sections the config hash leaves out
    changed = [f"{section}.{key}" for section in b if isinstance(b[section], dict) and section not in free
               for key in b[section] if a.get(section, {}).get(key) != b[section][key]]
    raise ConfigError(f"--resume {run_dir}: {', '.join(changed) or 'the config'} would change what the run "
                      "learned; only run.* and serve.* may change on resume")


def run_swarm(cfg: SwarmConfig | None = None, *, resume: str | Path | None = None, overrides: list[str] = (),
              progress: bool = True, console: Console | None = None, serve: bool = False) -> dict[str, Any]:
    """``swarm run``: start (or resume) a run; returns the summary dict (``state``: ``finished``,
    ``stopped`` or ``interrupted``; ``stopped_by``: None, ``swarm stop``, ``SIGINT`` or ``SIGTERM``).
    ``progress``: live tables when ``console`` is a terminal (else, and with False, plain progress
    lines). ``serve``: the gRPC query service runs next to it (``serve.address``) until the run ends.

    SIGINT and SIGTERM are handled (from the main thread) for the run's duration, see
    :mod:`swarm.run.signals`; :class:`RunStopped` when a signal ended the run without a summary
    (during startup, or a second signal), after the status is written and the resume command printed."""
    console = wide_console(console)
    if resume is not None:
        run_dir = RunDir(resume).require_run()
        cfg = load_config(run_dir.config, overrides)
        _check_resumable(load_config(run_dir.config), cfg, run_dir.path)
        check_workload(cfg.workload)
        check_seq_len(cfg.model, cfg.workload.seq_len)
    else:
        check_workload(cfg.workload)  # bad data is refused before a run directory or Ray exists
        check_seq_len(cfg.model, cfg.workload.seq_len)
        check_growth(cfg)
        run_dir = new_run_dir(cfg.run.out_dir, cfg.run.name)
        run_dir.config.write_text(to_yaml(cfg))
    topology = Topology(cfg.workload, cfg.levels.names[2:])
    members = {a.id for a in topology.agents}
    for change in run_dir.read_members() if resume is not None else []:  # swarm agents add/remove before
        if change["op"] == "add":
            members.add(change["agent"])
        else:
            members.discard(change["agent"])
    length = f"{cfg.run.steps} steps each" if cfg.run.steps is not None else \
        "no step limit (until Ctrl-C, SIGTERM or swarm stop)"
    console.print(f"[bold]swarm run[/bold] {run_dir.path}: {len(members)} agents, "
                  f"{len(topology.servers)} level servers, {length}" + (" (resumed)" if resume else ""),
                  highlight=False)
    signals = StopSignals()
    signals.install()
    try:
        with Run.open(cfg, run_dir, console, signals) as run:
            summary = _drive_and_finish(run, cfg, console, progress=progress, serve=serve)
    except KeyboardInterrupt as e:  # ours (Ray may re-raise them as plain KeyboardInterrupts): see signals.forced
        try:
            state = run_dir.read_status().get("state", "aborted")
        except (OSError, ValueError):  # stopped before the first status write
            state = "interrupted"
        how = "while starting" if signals.forced is None and not isinstance(e, ForcedStop) else \
            "at once" + (" (after the final checkpoint)" if state == "interrupted" else ", without a final checkpoint")
        console.print(f"[yellow]{describe(signals.reason or 'SIGINT')}: stopped {how}[/yellow]", highlight=False)
        console.print(f"continue with: swarm run --resume {run_dir.path}", highlight=False)
        raise RunStopped(str(run_dir.path), state, signals.reason or "SIGINT") from None
    finally:
        signals.restore()
    if summary["state"] != "finished":
        console.print(f"checkpointed; continue with: swarm run --resume {run_dir.path}", highlight=False)
    return summary


def _drive_and_finish(run: Run, cfg: SwarmConfig, console: Console, *, progress: bool, serve: bool) -> dict[str, Any]:
    """The body of :func:`run_swarm` inside the open run: the optional query service, the drive (live
    tables or plain lines), the final checkpoint and summary."""
    service = None
    try:
        if serve:
            from swarm.api.server import MemoryServer
            from swarm.api.servicer import build_service

            service = MemoryServer(lambda: build_service(cfg, run.namespace), cfg.serve)
            port = service.start()
            console.print(f"query service on {cfg.serve.address.rpartition(':')[0]}:{port} "
                          "(swarm query --address ... stats)")
        live_tables = progress and console.is_terminal  # a pipe or a file gets plain lines
        with Live(LiveView(run.snap), console=console, refresh_per_second=2) if live_tables else nullcontext() as live:
            completed = run.drive(live)
        return run.finish(completed)
    finally:
        if service is not None:
            service.stop()
