"""The command line of ``swarm checkpoint show|verify|fork`` (parsed in :mod:`swarm.cli`).

Exit codes: 0 done (``verify``: every check passed); 1 ``verify`` found problems (one line each,
naming the file and what differs); 2 a bad target, an unknown store or checkpoint, or a refused fork.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console

from swarm.checkpoint.stores import CheckpointError, describe, resolve, run_config, verify_store
from swarm.console import FitTable, wide_console


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _short(h: str | None) -> str:
    return h[:12] if h else "-"


def _num(n: int | None) -> str:
    return "-" if n is None else str(n)


def _stores(n: int) -> str:
    return f"{n} store" + ("" if n == 1 else "s")


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def show(target: str, console: Console, as_json: bool) -> int:
    """Print every store of the run (newest checkpoint and chain) or one store's whole lineage."""
    run, stores, whole = resolve(target)
    _, hash_ = run_config(run)
    views = [describe(ref, hash_) for ref in stores]
    if as_json:
        print(json.dumps({"run": str(run.path), "config_hash": hash_, "stores": views}, indent=2))
        return 0
    console.print(f"{run.path}: {_stores(len(views))}, config hash {hash_[:12]}", highlight=False)
    if whole:
        rows = []
        for v in views:
            n, r = v["newest"], v["lineage"]
            chain = f"{len(r)} ({sum(x['kept'] for x in r)} kept)" + ("" if v["complete"] else " +?")
            rows.append([v["store"], _short(n and n["id"]), _num(n and n["version"]), _short(n and n["parent"]),
                         chain, _num(n and n["pushes"]), _size(n and n["bytes"]), _short(n and n["config_hash"]),
                         _short(n and n["projection"]), _size(v["size"])])
        console.print(FitTable("newest checkpoint per store", ["store", "id", "version", "parent", "chain",
                                                                "pushes", "bytes", "config", "projection",
                                                                "on disk"], rows))
        if any(not v["complete"] for v in views):
            console.print("+?: the chain starts at the oldest kept checkpoint (a store written before lineage)")
    else:
        v = views[0]
        rows = [[_short(r["id"]), str(r["version"]), _short(r["parent"]), _when(r["time"]), _num(r["pushes"]),
                 _size(r["bytes"]), _num(r["records"]), _short(r["config_hash"]), _short(r["projection"]),
                 _size(r["size"]), "kept" if r["kept"] else "pruned"] for r in reversed(v["lineage"])]
        console.print(FitTable(f"{v['store']}: lineage, newest first", ["id", "version", "parent", "written",
                                                                          "pushes", "bytes", "journal records",
                                                                          "config", "projection", "size", "state"],
                               rows))
        console.print(f"store on disk: {_size(v['size'])}; chain "
                      + ("reaches the first checkpoint" if v["complete"] else "starts at its oldest kept checkpoint"))
    for v in views:
        for w in v["warnings"]:
            console.print(f"[yellow]{v['store']}: {w}[/yellow]", highlight=False)
    return 0


def verify(target: str, console: Console, as_json: bool) -> int:
    """Check every kept checkpoint, journal segment and lineage log; 1 when anything is wrong."""
    run, stores, _ = resolve(target)
    cfg, hash_ = run_config(run)
    results = {ref.name: verify_store(ref, cfg, hash_) for ref in stores}
    problems = [p for ps, _ in results.values() for p in ps]
    if as_json:
        print(json.dumps({"run": str(run.path), "ok": not problems,
                          "stores": {k: {"problems": p, "notes": n} for k, (p, n) in results.items()}}, indent=2))
        return 1 if problems else 0
    for _, notes in results.values():
        for n in notes:
            console.print(f"note: {n}", highlight=False, soft_wrap=True)
    for p in problems:
        console.print(f"[red]problem:[/red] {p}", highlight=False, soft_wrap=True)
    found = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
    console.print(f"{run.path}: {_stores(len(stores))}, " + (found if problems else "all good"), highlight=False)
    return 1 if problems else 0


def fork_command(target: str, to: str | None, checkpoint: str | None, overrides: list[str], console: Console,
                 as_json: bool) -> int:
    """Fork and say what each store of the new run directory starts from."""
    from swarm.checkpoint.fork import fork

    if not to:
        raise CheckpointError("fork: say where with --to NEW_RUN_DIR")
    report = fork(target, to, checkpoint=checkpoint, overrides=overrides)
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    rows = [[name, "-" if s is None else s["id"][:12], "-" if s is None else str(s["version"])]
            for name, s in report["stores"].items()]
    console.print(FitTable(f"{report['to']}: forked from {report['source']}", ["store", "checkpoint", "version"],
                           rows))
    for n in report["notes"]:
        console.print(f"[yellow]{n}[/yellow]", highlight=False)
    console.print(f"continue it with: swarm run --resume {report['to']}", highlight=False)
    return 0


def main(args: Any) -> int:
    """``swarm checkpoint``: ``args`` has ``action``, ``target``, ``json``, ``to``, ``checkpoint``, ``overrides``."""
    console = wide_console()
    try:
        if args.action == "fork":
            return fork_command(args.target, args.to, args.checkpoint, list(args.overrides), console, args.json)
        if args.to or args.checkpoint or args.overrides:
            raise CheckpointError(f"{args.action}: --to, --checkpoint and key=value belong to fork")
        return (show if args.action == "show" else verify)(args.target, console, args.json)
    except (CheckpointError, OSError) as e:
        print(f"swarm checkpoint {args.action}: {e}", file=sys.stderr)
        return 2
