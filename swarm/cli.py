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

import argparse
import sys
import time
from collections.abc import Sequence

# no swarm.config (omegaconf), torch, transformers or Ray at import: `swarm --help`, `swarm status` and
# `swarm query` start fast (tests/test_architecture.py, bench/cli_start.py); each command imports what it needs

def experiment_help() -> str:
    """The description of ``swarm experiment --help``: the default plan's and the CI plan's sizes, counted
    from the plans themselves (so they cannot drift; this loads both configs, only for this help)."""
    try:
        from swarm.config import load_config
        from swarm.experiment.jobs import plan

        sizes = {name: f"{len(plan(load_config(name)))} jobs" for name in ("experiment/team", "experiment/ci")}
    except Exception as e:  # the help must still print when a config is broken: say why the counts are missing
        sizes = {name: f"? jobs ({type(e).__name__}: {e})" for name in ("experiment/team", "experiment/ci")}
    return ("Team-learning experiments: arms x seeds x scenarios -> report.md (docs/experiments.md). "
            f"The default plan (experiment/team) is {sizes['experiment/team']}, about 36-45 minutes on 2 cores "
            f"(docs/experiments.md has the measured run); `swarm experiment experiment/ci` is "
            f"{sizes['experiment/ci']}, a few minutes (what the tests run). Ctrl-C stops; the same command "
            "resumes, skipping finished jobs.")


def _split(args: Sequence[str]) -> tuple[str | None, list[str]]:
    from swarm.config import ConfigError

    config = None
    overrides: list[str] = []
    for arg in args:
        if "=" in arg:
            overrides.append(arg)
        elif config is None:
            config = arg
        else:
            raise ConfigError(f"unexpected argument {arg!r}: one CONFIG at most, then key=value overrides")
    return config, overrides


def build_parser(experiment_description: str | None = None) -> argparse.ArgumentParser:
    """The ``swarm`` parser; ``experiment_description``: the text of ``swarm experiment --help``
    (:func:`experiment_help`, computed only when that help is asked for)."""
    parser = argparse.ArgumentParser(prog="swarm", description="Multi-timescale LoRA swarm on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="inspect configurations")
    config_sub = config.add_subparsers(dest="action", required=True)
    show = config_sub.add_parser("show", help="print the resolved config")
    show.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    run = sub.add_parser("run", help="launch level servers and agents on Ray and watch them learn")
    run.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoints")
    run.add_argument("--quiet", action="store_true",
                     help="plain progress lines instead of live tables (the default when stdout is not a terminal)")
    run.add_argument("--serve", action="store_true", help="also serve the shared memory over gRPC (serve.address)")
    run.add_argument("--linger", action="store_true",
                     help="with --serve: keep serving (from the checkpoints) after the run ends, until Ctrl-C")
    run.add_argument("--dashboard", action="store_true", help="also serve the run's web page (docs/dashboard.md)")
    run.add_argument("--dashboard-address", default="127.0.0.1:8700", metavar="HOST:PORT",
                     help="where --dashboard serves (default 127.0.0.1:8700)")
    dash = sub.add_parser("dashboard", help="a run's live web page: hierarchy, merges, learning curves, circuits "
                                            "and what they do (a finished run: from its directory)")
    dash.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="default: the latest run under runs/")
    dash.add_argument("--address", default="127.0.0.1:8700",
                      help="HOST:PORT (default 127.0.0.1:8700); beyond loopback it needs serve.token or $SWARM_TOKEN")
    dash.add_argument("--wait", action="store_true", help="wait (up to 10 min) for RUN_DIR to hold a run")
    dash.add_argument("overrides", nargs="*", metavar="key=value", help="serve.token=... (serve.* only)")
    serve = sub.add_parser("serve", help="serve a run's shared memory over gRPC (a live run, or a finished or "
                                         "stopped one read-only from its checkpoints)")
    serve.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="default: the latest run under runs/")
    serve.add_argument("--address", help="HOST:PORT (default: serve.address of the run's config)")
    serve.add_argument("--follow", action="store_true",
                       help="serve the newest live run under RUN_DIR (default runs/), switching to newer ones")
    serve.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. serve.token=... (serve.* only)")
    sub.add_parser("query", help="query a swarm over gRPC (swarm query --help)", add_help=False)
    sub.add_parser("feed", help="send documents to an agent (or team) to learn, over gRPC (swarm feed --help)",
                   add_help=False)
    pre = sub.add_parser("pretrain-base", help="pre-train (once, cached by content) the tiny byte-level base")
    pre.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    exp = sub.add_parser("experiment", help="team-learning experiments: arms x seeds x scenarios -> report.md",
                         description=experiment_description)
    exp.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    exp.add_argument("--report", metavar="RUN_DIR", help="only rewrite RUN_DIR's report from its finished jobs")
    ab = sub.add_parser("absorb", help="pour PEFT LoRA adapters into a run's shared level (guarded, rollback)")
    ab.add_argument("adapters", nargs="+", metavar="ADAPTER_DIR|absorb.key=value")
    ab.add_argument("--level", help="the shared level (swarm, domain, foundation)")
    ab.add_argument("--server", help="the level server, when a level has several (e.g. swarm/text)")
    ab.add_argument("--run", metavar="RUN_DIR", help="the run (live or stopped); default: the latest under runs/")
    ab.add_argument("--strength", type=float, help="alpha in B += alpha * delta (absorb.strength)")
    ab.add_argument("--grow", type=int, metavar="N", help="first grow the read space by N rows holding the "
                    "adapters' directions P misses, so far more of them is kept (absorb.grow)")
    ab.add_argument("--dry-run", action="store_true", help="report what would happen; change nothing")
    ab.add_argument("--eval", metavar="FILE", help="also score FILE's bytes before and after (what the adapter brings)")
    ab.add_argument("--json", action="store_true", help="print the report as JSON")
    cluster = sub.add_parser("cluster", help="a multi-node Ray cluster on this machine (infra/onebox.yaml)")
    cluster.add_argument("action", choices=["up", "down", "status"])
    cluster.add_argument("config", nargs="?", default=None, help="default: infra/onebox.yaml of this checkout")
    status = sub.add_parser("status", help="show a running or finished swarm (levels, versions, agents, rates)")
    status.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="default: the latest run under runs/")
    stop = sub.add_parser("stop", help="ask a running swarm to stop as on Ctrl-C (checkpoint, summary) and wait")
    stop.add_argument("run_dir", metavar="RUN_DIR")
    stop.add_argument("--timeout", type=float, default=600.0,
                      help="seconds to wait for the run to stop (default 600; the request stays after that)")
    from swarm.run.control import add_agents_parser

    add_agents_parser(sub)
    ckpt = sub.add_parser("checkpoint", help="show, verify or fork a run's checkpoints (docs/checkpoints.md)")
    ckpt.add_argument("action", choices=["show", "verify", "fork"])
    ckpt.add_argument("target", metavar="RUN_DIR[/STORE]", help="a run directory, or one store in it (swarm/red, "
                                                                "foundation, an agent id, levels/..., agents/...)")
    ckpt.add_argument("--to", metavar="NEW_RUN_DIR", help="fork: the new run directory (must not exist)")
    ckpt.add_argument("--checkpoint", metavar="ID", help="fork: the named store's checkpoint (id or prefix; "
                                                         "default: its newest)")
    ckpt.add_argument("--json", action="store_true", help="print JSON")
    ckpt.add_argument("overrides", nargs="*", metavar="key=value", help="fork: run.* / serve.* settings to change")
    demo = sub.add_parser("demo", help="single-process demo: the level stack learns stdlib source bytes")
    demo.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


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
        config_name, overrides = _split(args.args)
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


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides may also come after the options (``swarm run --quiet a.b=1``),
    which argparse alone refuses once the positional list has been read."""
    argv = list(argv)
    wants_help = argv[:1] == ["experiment"] and any(a in ("-h", "--help") for a in argv)
    parser = build_parser(experiment_help() if wants_help else None)
    args, extra = parser.parse_known_args(argv)
    target = next((n for n in ("args", "adapters", "overrides") if isinstance(getattr(args, n, None), list)), None)
    if extra:
        if target is None or not all("=" in e and not e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, target, [*getattr(args, target), *extra])
    return args


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
        config_name, overrides = _split(args.args)
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
