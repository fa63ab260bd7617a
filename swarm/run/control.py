"""Commands that ask a running swarm's driver for something it does between chunks: ``swarm stop`` and
``swarm agents add/remove`` (each leaves a request file in the run directory, :mod:`swarm.rundir`,
and waits for the driver to act on it). No Ray, torch or omegaconf at import.

    swarm agents add NAME --team T [--data PATH ...] [--run RUN_DIR] [--timeout S]
    swarm agents remove NAME [--run RUN_DIR] [--timeout S]

``add``: NAME joins team T, starting from the team's current shared levels (``--data``: its own
files, directories or globs; else the run's workload's documents for NAME); an agent that was a
member before resumes from its checkpoint. ``remove``: NAME (or its id) leaves; it is checkpointed,
its store kept. What the driver checks and does: :mod:`swarm.run.membership`.
"""

from __future__ import annotations

import sys
import time

PROGRESS_S = 10.0  # while waiting, a line at least this often


def add_agents_parser(sub) -> None:
    """``swarm agents add|remove`` under the ``swarm`` command's subparsers ``sub``."""
    agents = sub.add_parser("agents", help="add or remove a member of a running swarm (docs/learn.md)")
    actions = agents.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="NAME joins team T from its current shared levels")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--team", required=True, metavar="T", help="an existing team of the run")
    add.add_argument("--data", nargs="+", metavar="PATH", help="its files, directories or globs (default: the "
                                                                "run's workload's documents for NAME)")
    remove = actions.add_parser("remove", help="NAME leaves (checkpointed; add it back to resume it)")
    remove.add_argument("name", metavar="NAME", help="an agent name or id (domain/team/name)")
    for p in (add, remove):
        p.add_argument("--run", dest="run_dir", metavar="RUN_DIR", help="default: the latest run under runs/")
        p.add_argument("--timeout", type=float, default=300.0,
                       help="seconds to wait for the driver's answer (default 300; it answers between chunks)")


def main(args) -> int:
    """``swarm stop`` or ``swarm agents``, from the parsed ``args``; the exit code."""
    if args.command == "stop":
        return stop(args.run_dir, args.timeout)
    request = {"op": args.action, "name": args.name}
    if args.action == "add":
        request |= {"team": args.team, "data": list(args.data or [])}
    return agents(args.run_dir, request, args.timeout)


def agents(run_dir: str | None, request: dict, timeout_s: float, echo=print) -> int:
    """Leave a membership ``request`` for the run's driver and wait up to ``timeout_s`` for its answer,
    printing progress. 0 when applied; 1 when refused (the reason is printed), the run is not live,
    or no answer came in time (the request is withdrawn if the driver had not taken it)."""
    from swarm.rundir import RunDir, latest_run

    path = run_dir or latest_run()
    if path is None:
        print("swarm agents: no run found under runs/ (start one with `swarm run`)", file=sys.stderr)
        return 1
    run = RunDir(path)
    alive = run.liveness()
    if not alive.live:
        print(f"swarm agents: {path} is {alive.describe()}: members change only while it runs "
              f"(swarm run --resume {path})", file=sys.stderr)
        return 1
    rid = run.submit_member_request(request)
    what = f"{request['op']} {request['name']}" + (f" to team {request['team']}" if request.get("team") else "")
    echo(f"asked {path} to {what}; waiting for the driver (it applies requests between chunks)", flush=True)
    start = last = time.time()
    while time.time() - start < timeout_s:
        answer = run.member_answer(rid)
        if answer is not None:
            if answer.get("ok"):
                echo(answer.get("reason") or f"{request['op']}: done")
                return 0
            print(f"swarm agents: refused ({answer.get('code')}): {answer.get('reason')}", file=sys.stderr)
            return 1
        alive = run.liveness()
        if not alive.live:
            run.withdraw_member_request(rid)
            print(f"swarm agents: {path} is {alive.describe()}; the request was not applied", file=sys.stderr)
            return 1
        if time.time() - last >= PROGRESS_S:
            echo(f"  still waiting ({time.time() - start:.0f} s; the run is {alive.state})", flush=True)
            last = time.time()
        time.sleep(0.2)
    taken = not run.withdraw_member_request(rid)
    print(f"swarm agents: no answer within {timeout_s:.0f} s; " + (
        "the driver took the request and may still apply it (see swarm status)" if taken else
        "the request was withdrawn"), file=sys.stderr)
    return 1


def stop(run_dir: str, timeout_s: float) -> int:
    """``swarm stop``: ask the run's driver to stop (a request file it polls between chunks), then wait until
    its status is no longer live and its summary is written (or its driver exited). 0 when it stopped or
    had already; 1 when there is no run, it is dead, or it did not stop within ``timeout_s``."""
    from swarm.rundir import RunDir, driver_alive

    run = RunDir(run_dir)
    if not run.is_run():
        print(f"swarm stop: {run_dir} is not a run directory (no config.yaml)", file=sys.stderr)
        return 1
    alive = run.liveness()
    if alive.state == "none":
        print(f"swarm stop: {run_dir} is not running (no status.json: it never started)", file=sys.stderr)
        return 1
    if alive.state == "dead":
        print(f"swarm stop: {run_dir} is {alive.describe()}; nothing to stop. "
              f"Continue it with: swarm run --resume {run_dir}", file=sys.stderr)
        return 1
    if not alive.live:
        print(f"{run_dir} already stopped ({alive.state})")
        return 0
    asked = time.time()
    run.request_stop()
    print(f"asked {run_dir} to stop; waiting up to {timeout_s:.0f} s for the steps in flight, the checkpoints and "
          "the summary", flush=True)
    deadline = asked + timeout_s
    while time.time() < deadline:
        alive = run.liveness()
        if alive.state == "dead":
            print(f"swarm stop: {run_dir} is {alive.describe()}. Continue it with: swarm run --resume {run_dir}",
                  file=sys.stderr)
            return 1
        if not alive.live:
            summarised = run.summary_json.is_file() and run.summary_json.stat().st_mtime >= asked - 1
            if summarised or driver_alive(run.read_status().get("driver")) is not True:
                print(f"{run_dir} {alive.state}" + (f"; summary: {run.summary_md}" if summarised else "")
                      + f". Continue it with: swarm run --resume {run_dir}")
                return 0 if alive.state in ("stopped", "interrupted", "finished") else 1
        time.sleep(0.5)
    print(f"swarm stop: {run_dir} still {alive.state} after {timeout_s:.0f} s (its stop request stays: it stops "
          "after the chunks in flight; see swarm status)", file=sys.stderr)
    return 1
