"""The ``swarm`` command line.

    swarm config show [CONFIG] [key=value | group=option ...]
    swarm demo [CONFIG] [key=value | group=option ...]

CONFIG is a name under ``configs/`` (default: demo) or a path to a YAML file;
arguments containing ``=`` are overrides.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from swarm.config import ConfigError, load_config, to_yaml


def _split(args: Sequence[str]) -> tuple[str | None, list[str]]:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm", description="Multi-timescale LoRA swarm on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="inspect configurations")
    config_sub = config.add_subparsers(dest="action", required=True)
    show = config_sub.add_parser("show", help="print the resolved config")
    show.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    demo = sub.add_parser("demo", help="single-process demo: the level stack learns stdlib source bytes")
    demo.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config_name, overrides = _split(args.args)
        cfg = load_config(config_name, overrides)
    except ConfigError as e:
        print(f"swarm: config error: {e}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(to_yaml(cfg), end="")
        return 0
    from swarm.demo import run_demo  # torch/transformers import only when needed

    run_demo(cfg, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
