"""The ``swarm`` command line.

    swarm run [CONFIG] [key=value | group=option ...]      # default CONFIG: swarm
    swarm run --resume RUN_DIR [key=value ...]
    swarm status [RUN_DIR]
    swarm stop RUN_DIR [--timeout S]                       # ask a running swarm to checkpoint and stop
    swarm agents add NAME --team T [--data PATH ...] | remove NAME [--run RUN_DIR]  # members of a live run
    swarm run --serve [--linger] [CONFIG] [key=value ...]  # also serve queries (--linger: after the run too)
    swarm serve [RUN_DIR] [--address HOST:PORT]            # gRPC query service: live run, or from checkpoints
    swarm dashboard [RUN_DIR] [--address HOST:PORT]        # the run's live web page (docs/dashboard.md)
    swarm run --dashboard [CONFIG] [key=value ...]         # the run, with its web page beside it
    swarm query levels|level|export|circuits|circuit|generate|score|stats|watch ...
    swarm feed AGENT [FILE ... | -] | --team TEAM [--every] [FILE ...]  # documents for agents to learn (Learn)
    swarm cluster up|down|status [infra/onebox.yaml]        # a multi-node Ray cluster on this machine
    swarm pretrain-base [CONFIG] [key=value ...]           # the cached pre-trained tiny base
    swarm experiment [CONFIG] [key=value ...]              # default CONFIG: experiment/team
    swarm experiment --report RUN_DIR                      # rewrite report.md + plots from the jobs
    swarm absorb ADAPTER_DIR... --level L [--server S] --run RUN_DIR [--dry-run] [--eval FILE] [absorb.key=value ...]
    swarm demo [CONFIG] [key=value | group=option ...]     # default CONFIG: demo
    swarm config show [CONFIG] [key=value | group=option ...]
    swarm checkpoint show|verify RUN_DIR[/STORE] [--json]   # lineage of checkpoints; re-hash and check them
    swarm checkpoint fork RUN_DIR[/STORE] --to NEW_RUN_DIR [--checkpoint ID] [run.key=value ...]

CONFIG is a name under ``configs/`` or a path to a YAML file; arguments containing
``=`` are overrides.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

# no swarm.config (omegaconf), torch, transformers or Ray at import: `swarm --help`, `swarm status` and
# `swarm query` start fast (tests/test_architecture.py, bench/cli_start.py); each command imports what it needs
from swarm.cli_args import parse, split_args


def _status(run_dir: str | None) -> int:
    from swarm.console import wide_console
    from swarm.run.display import render
    from swarm.rundir import latest_run, liveness_of, read_status

    path = run_dir or latest_run()
    if path is None:
        print("swarm status: no run found under runs/ (start one with `swarm run`)", file=sys.stderr)
        return 1
    try:
        snap = read_status(path)
    except FileNotFoundError as e:
        print(f"swarm status: {e}", file=sys.stderr)
        return 1
    age = time.time() - snap["updated"]
    alive = liveness_of(snap)
    console = wide_console()
    console.print(f"{path}: {alive.describe()}, updated {age:.0f} s ago", highlight=False)
    console.print(render({**snap, "state": alive.state}))
    if alive.state != "finished" and not alive.live:
        console.print(f"continue with: swarm run --resume {path}", highlight=False)
    return 0


def _serve(args) -> int:
    from swarm.api.server import serve_run
    from swarm.rundir import latest_run

    overrides = list(args.overrides) + ([f"serve.address={args.address}"] if args.address else [])
    bad = [o for o in overrides if not o.startswith("serve.")]
    if bad:
        print(f"swarm serve: only serve.* settings may change here, got {bad[0]!r}", file=sys.stderr)
        return 2
    if args.follow:
        from swarm.api.server import serve_follow
        from swarm.rundir import DEFAULT_OUT_DIR

        try:
            serve_follow(args.run_dir or DEFAULT_OUT_DIR, overrides)
        except (OSError, ValueError, TypeError) as e:
            print(f"swarm serve: {e}", file=sys.stderr)
            return 2
        return 0
    path = args.run_dir or latest_run()
    if path is None:
        print("swarm serve: no run found under runs/ (start one with `swarm run`)", file=sys.stderr)
        return 1
    try:
        serve_run(path, overrides)
    except (FileNotFoundError, ValueError, OSError) as e:  # ValueError: ConfigError too
        print(f"swarm serve: {e}", file=sys.stderr)
        return 2
    return 0


def _dashboard(args) -> int:
    """``swarm dashboard``: serve a run's web page until Ctrl-C (live while it runs, else from its directory)."""
    from swarm.dashboard.command import serve_dashboard
    from swarm.rundir import latest_run

    bad = [o for o in args.overrides if not o.startswith("serve.")]
    if bad:
        print(f"swarm dashboard: only serve.* settings may change here, got {bad[0]!r}", file=sys.stderr)
        return 2
    path = args.run_dir or latest_run()
    if path is None:
        print("swarm dashboard: no run found under runs/ (start one with `swarm run`)", file=sys.stderr)
        return 1
    try:
        serve_dashboard(path, args.address, args.overrides, wait_s=600.0 if args.wait else 0.0)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as e:  # ValueError: ConfigError too
        print(f"swarm dashboard: {e}", file=sys.stderr)
        return 2
    return 0


def _dashboard_run_dir(cfg, resume: str | None, config_name, overrides: list[str], load_config):
    """``swarm run --dashboard``: the run directory the run will use, known before it starts (a new run
    without ``run.name`` is given one, the timestamp it would have got) and the config to run with."""
    from pathlib import Path

    if resume:
        return Path(resume), cfg, overrides
    if cfg.run.name is None:
        overrides = [*overrides, f"run.name={time.strftime('%Y%m%d-%H%M%S')}"]
        cfg = load_config(config_name or "swarm", overrides)
    return Path(cfg.run.out_dir) / cfg.run.name, cfg, overrides


def _linger(run_dir: str, overrides: list[str]) -> int:
    """``swarm run --serve --linger``: the run has ended; serve it from its checkpoints until Ctrl-C."""
    from swarm.api.server import serve_run

    try:
        serve_run(run_dir, [o for o in overrides if o.startswith("serve.")])
    except (FileNotFoundError, ValueError, OSError) as e:  # ValueError: ConfigError too
        print(f"swarm run --linger: {e}", file=sys.stderr)
        return 2
    return 0


def _cluster(args) -> int:
    from pathlib import Path

    from swarm.tools import onebox

    path = args.config or Path(__file__).resolve().parents[1] / "infra" / "onebox.yaml"
    try:
        cfg = onebox.load(path)
        if args.action == "up":
            address = onebox.up(cfg)
            nodes = onebox.wait_for_nodes(cfg)
            print(f"{len(nodes)} Ray nodes up on this machine; use them with:\n  export RAY_ADDRESS={address}")
        elif args.action == "down":
            print(f"stopped {onebox.down(cfg)} processes of the cluster at {cfg.address}")
        else:
            procs = onebox.processes(cfg)
            print(f"{cfg.address}: " + (f"running ({len(procs)} processes)" if procs else "not running"))
    except (OSError, ValueError, RuntimeError) as e:
        print(f"swarm cluster {args.action}: {e}", file=sys.stderr)
        return 1
    return 0


def _absorb(args) -> int:
    import json

    from swarm.absorb.command import absorb, render
    from swarm.console import wide_console
    from swarm.rundir import latest_run

    overrides = [a for a in args.adapters if "=" in a]
    adapters = [a for a in args.adapters if "=" not in a]
    bad = [o for o in overrides if not o.startswith("absorb.")]
    if bad or not adapters or not (args.level or args.server):
        why = (f"only absorb.* settings may change here, got {bad[0]!r}" if bad else
               "name at least one ADAPTER_DIR" if not adapters else "say where: --level or --server")
        print(f"swarm absorb: {why}", file=sys.stderr)
        return 2
    if args.strength is not None:
        overrides.append(f"absorb.strength={args.strength}")
    if args.grow is not None:
        overrides.append(f"absorb.grow={args.grow}")
    run_dir = args.run or latest_run()
    if run_dir is None:
        print("swarm absorb: no run found under runs/ (name one with --run)", file=sys.stderr)
        return 2
    try:
        report = absorb(run_dir, adapters, level=args.level, server=args.server, dry_run=args.dry_run,
                        overrides=overrides, eval_file=args.eval)
    except (OSError, ValueError) as e:  # ConfigError too
        print(f"swarm absorb: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report, wide_console())
    return 1 if report["outcome"] == "rolled back" else 0


def _experiment(args) -> int:
    if args.report:
        from swarm.experiment.report import write_report

        try:
            print(f"report: {write_report(args.report)}")
        except (OSError, ValueError, KeyError) as e:
            print(f"swarm experiment --report: {args.report}: {e}", file=sys.stderr)
            return 2
        return 0
    from swarm.config import ConfigError, load_config

    try:
        config_name, overrides = split_args(args.args)
        load_config(config_name or "experiment/team", overrides)  # fail fast, before any work
    except ConfigError as e:
        print(f"swarm: config error: {e}", file=sys.stderr)
        return 2
    from swarm.experiment.runner import run_experiment

    try:
        run_experiment(config_name or "experiment/team", overrides)
    except KeyboardInterrupt:
        print("swarm experiment: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as e:
        print(f"swarm experiment: {e}", file=sys.stderr)
        return 1
    return 0

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["feed"]:
        from swarm.api.feed import main as feed_main

        return feed_main(argv[1:])
    if argv[:1] == ["query"]:
        from swarm.api.client import main as query_main

        return query_main(argv[1:])
    args = parse(argv)
    if args.command == "run" and args.linger and not args.serve:
        print("swarm run: --linger keeps the query service up after the run: it needs --serve", file=sys.stderr)
        return 2
    if args.command == "status":
        return _status(args.run_dir)
    if args.command in ("stop", "agents"):  # requests the running driver takes between chunks
        from swarm.run.control import main as control_main

        return control_main(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "dashboard":
        return _dashboard(args)
    if args.command == "cluster":
        return _cluster(args)
    if args.command == "experiment":
        return _experiment(args)
    if args.command == "absorb":
        return _absorb(args)
    if args.command == "checkpoint":
        from swarm.checkpoint.command import main as checkpoint_main  # torch only when asked

        return checkpoint_main(args)
    from swarm.config import ConfigError, load_config, to_yaml

    try:
        config_name, overrides = split_args(args.args)
        if args.command == "run" and args.resume:
            if config_name is not None:
                raise ConfigError(f"--resume takes the config from {args.resume}; drop {config_name!r}")
            cfg = None
        else:
            default = "demo" if args.command == "demo" else "swarm"
            cfg = load_config(config_name or default, overrides)
    except ConfigError as e:
        print(f"swarm: config error: {e}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(to_yaml(cfg), end="")
        return 0
    if args.command == "pretrain-base":
        from swarm.tools.pretrain import pretrain_base

        try:
            path = pretrain_base(cfg, progress=not args.quiet)
        except (OSError, ValueError) as e:
            print(f"swarm pretrain-base: {e}", file=sys.stderr)
            return 2
        print(f"use it with: model.name_or_path={path}")
        return 0
    if cfg is not None and args.command in ("run", "demo"):
        from swarm.tools.pretrain import with_pretrained_base  # torch import only when needed

        try:
            cfg, overrides = with_pretrained_base(cfg, lambda o: load_config(config_name or default, o), overrides,
                                                  progress=not args.quiet)
        except (OSError, ValueError) as e:  # ConfigError too
            print(f"swarm {args.command}: pretrained base: {e}", file=sys.stderr)
            return 2
    if args.command == "run":
        from swarm.run.command import run_swarm  # ray/torch import only when needed
        from swarm.run.signals import RunStopped, exit_code

        page = None
        if args.dashboard:
            from swarm.dashboard.command import start_beside, stop_beside

            run_dir, cfg, overrides = _dashboard_run_dir(cfg, args.resume, config_name, overrides, load_config)
            page = start_beside(run_dir, args.dashboard_address)
            print(f"dashboard: http://{args.dashboard_address}/ (it opens once the run has started; docs/dashboard.md)",
                  flush=True)
        try:
            summary = run_swarm(cfg, resume=args.resume, overrides=overrides, progress=not args.quiet,
                                serve=args.serve)
        except RunStopped as e:  # a signal while starting, or a second one: no summary
            return e.exit_code
        except (OSError, ValueError) as e:  # bad config (ConfigError), run dir, or serve address
            print(f"swarm run: {e}", file=sys.stderr)
            return 2
        finally:
            if page is not None and not args.linger:
                stop_beside(page)
        if summary["state"] not in ("finished", "stopped"):  # a signal: 128 + its number (130, 143)
            return exit_code(summary.get("stopped_by")) or 130
        try:
            return _linger(summary["run_dir"], overrides) if args.linger else 0
        finally:
            if page is not None:
                stop_beside(page)
    from swarm.tools.demo import run_demo  # torch/transformers import only when needed

    run_demo(cfg, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
