"""The ``swarm`` command line's arguments: the parser, ``key=value`` overrides after options, and
CONFIG versus overrides (:mod:`swarm.cli` runs the commands). Imports nothing heavy: ``swarm --help``
starts fast (tests/test_architecture.py, bench/cli_start.py)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


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


def split_args(args: Sequence[str]) -> tuple[str | None, list[str]]:
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
