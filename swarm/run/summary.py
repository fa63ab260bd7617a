"""The end of a run: did bits per byte fall, what did the shared levels contribute, what moved up.

Every agent is evaluated on its held-out files three ways: before learning (recorded when
it started, step 0), at the end with all levels (the worker's evaluation at its last step
when there is one, else a new one), and at the end with its local levels only (context +
agent). ``shared_gain`` = local-only minus all-levels: the bits per byte the pulled
team/domain/foundation levels are worth to that agent. It is also evaluated on its
teammates' and the other teams' held-out files, with the base alone and with all its
levels: ``team_gain`` and ``others_gain`` = base alone minus all levels there, i.e. how far
what it learned carries over, measured against the base (which says nothing about sharing
when the base was randomly initialised: anything byte-level helps a random network).

The names of the columns are those of the live tables (:mod:`swarm.run.display`).
"""

from __future__ import annotations

import json
from typing import Any

import ray
from rich.console import Group
from rich.text import Text

from swarm.console import FitTable
from swarm.run.display import comm_percent, servers_table
from swarm.rundir import write_atomic

AGENT_HEADERS = ("agent", "steps", "start bpb @0", "end bpb", "local levels only", "shared gain",
                 "teammates' gain", "other teams' gain", "pushes", "pushes refused", "ctx->agent", "circuits up",
                 "comm %")
GAINS = ("Gains are bits per byte saved (positive: better). shared gain: all levels against the agent's local "
         "levels only (context + agent), on its own held-out files. teammates' / other teams' gain: all its "
         "levels against the base alone, on their held-out files. start bpb: before any learning (step 0); "
         "end bpb and local levels only: at the agent's last step.")
RANDOM_BASE = ("The base was randomly initialised (no model.name_or_path): the teammates' and other teams' gains "
               "are measured against a random network, which anything byte-level improves; they are not the "
               "value of sharing.")
NAMES = ("ctx->agent: context circuits promoted into the agent's own level; circuits up: circuits adopted by "
         "consensus at the level above (and removed where they came from); circuits in: circuits a level "
         "server adopted by consensus; pushes in: pushes (from agents, or forwards from child servers) a "
         "level server accepted.")


def summarize(run) -> dict[str, Any]:
    """Evaluate the agents, collect server stats, write summary.json + summary.md, print the tables.

    The final all-levels evaluation also goes into the snapshot (``status.json``) with its step, so
    ``swarm status`` after the run shows the figure the summary reports."""
    local = run.cfg.levels.names[:2]
    ids = list(run.agents)
    recs = [run.snap["agents"][a] for a in ids]
    # the worker evaluates at the run's last step; an interrupted run needs one now
    stale = [a for a, r in zip(ids, recs, strict=True) if r.get("eval_step") != r["step"] or r.get("eval_bpb") is None]
    for aid, f in zip(stale, ray.get([run.agents[a].evaluate.remote(None) for a in stale]), strict=True):
        rec = run.snap["agents"][aid]
        run.snap["agents"][aid] = {**rec, "eval_bpb": f, "eval_step": rec["step"]}
    if stale:
        run.snap.write()
    own = ray.get([run.agents[a].evaluate.remote(local) for a in ids])
    transfer = _transfer(run, ids)
    agents = []
    for aid, o in zip(ids, own, strict=True):
        rec = run.snap["agents"][aid]
        comm = comm_percent(rec["comm_s"], rec["compute_s"])
        agents.append({"agent": aid, "steps": rec["step"], "bpb_start": rec["eval_start"], "bpb_end": rec["eval_bpb"],
                       "bpb_local_only": o, "shared_gain": o - rec["eval_bpb"], "pushes": rec["pushes"],
                       "refused": rec["rejected"], "promoted_to_agent": rec["promoted"],
                       "removed_after_consensus": rec["removed"],
                       "comm_fraction": None if comm == "-" else rec["comm_s"] / (rec["comm_s"] + rec["compute_s"]),
                       "cache": rec.get("cache", {}), **transfer[aid]})
    servers = []
    for name, st in run.snap["servers"].items():
        s = st.get("stats", {})
        servers.append({"level": name, "version": st["version"], "merges": s.get("merges", 0),
                        "accepted": s.get("accepted", 0), "refused": s.get("rejected", {}),
                        "refused_proposals": s.get("rejected_proposals", {}),
                        "promotions": s.get("promotions", 0), "removed": s.get("removed", 0),
                        "forwarded": s.get("forwarded", 0), "screened_fraction": st.get("screened_fraction"),
                        "rank": st.get("rank"), "crystallised_fraction": st.get("crystallised_fraction"),
                        "growths": st.get("growths"), "warnings": st.get("warnings", [])})
    n = len(agents)
    base = run.cfg.model.name_or_path
    summary = {"run_dir": str(run.dir), "state": run.snap["state"], "stopped_by": run.snap.get("stopped_by"),
               "abandoned": list(getattr(run, "abandoned", [])), "base": base or None,
               "base_pretrained": bool(base), "agents": agents, "servers": servers,
               "mean_bpb_start": sum(a["bpb_start"] for a in agents) / n,
               "mean_bpb_end": sum(a["bpb_end"] for a in agents) / n,
               "mean_shared_gain": sum(a["shared_gain"] for a in agents) / n,
               "wall_s": run.snap["updated"] - run.snap["started"]}
    write_atomic(run.rundir.summary_json, json.dumps(summary, indent=2) + "\n")  # whole files even when killed
    write_atomic(run.rundir.summary_md, to_markdown(summary))
    run.console.print(render(summary))
    return summary


def _transfer(run, ids: list[str]) -> dict[str, dict[str, float | None]]:
    """Per agent: bits/byte on teammates' and other teams' held-out windows, base alone vs all levels."""
    from agents.text import Windows

    windows = dict(zip(ids, ray.get([run.agents[a].held_out.remote() for a in ids]), strict=True))
    team = {a: m["team"] for a, m in run.membership.members.items()}  # with those that joined
    out: dict[str, dict[str, float | None]] = {}
    for aid in ids:
        groups = {"team": [b for b in ids if b != aid and team[b] == team[aid]],
                  "others": [b for b in ids if team[b] != team[aid]]}
        out[aid] = {}
        for key, members in groups.items():
            if not members:
                out[aid].update({f"bpb_{key}_base": None, f"bpb_{key}": None, f"{key}_gain": None})
                continue
            w = Windows.cat([windows[b] for b in members])
            base, learned = ray.get([run.agents[aid].evaluate.remote([], w), run.agents[aid].evaluate.remote(None, w)])
            out[aid].update({f"bpb_{key}_base": base, f"bpb_{key}": learned, f"{key}_gain": base - learned})
    return out


def _steps(s: dict[str, Any]) -> str:
    steps = sorted({a["steps"] for a in s["agents"]})
    return f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"


def verdict(s: dict[str, Any], details: bool = True) -> str:
    """The summary in three sentences; ``details``: end with where summary.md is (not in summary.md)."""
    circuits_in = sum(x["promotions"] for x in s["servers"])
    merges = sum(x["merges"] for x in s["servers"])
    ctx = sum(a["promoted_to_agent"] for a in s["agents"])
    gain = s["mean_shared_gain"]
    out = (f"Held-out bits per byte went from {s['mean_bpb_start']:.3f} (step 0) to {s['mean_bpb_end']:.3f} "
           f"({_steps(s)}), mean of {len(s['agents'])} agents. The level servers made {merges} merges and adopted "
           f"{circuits_in} circuits by consensus (circuits in); inside the agents {ctx} context circuits were "
           f"promoted to the agent level (ctx->agent). With the shared levels switched off the agents would be "
           f"{abs(gain):.3f} bits/byte " + ("worse" if gain >= 0 else "better") + " (shared gain).")
    if not s.get("base_pretrained", True):
        out += " " + RANDOM_BASE
    return out + (f" Details: {s['run_dir']}/summary.md" if details else "")


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def _agent_cells(a: dict[str, Any]) -> list[str]:
    return [a["agent"], str(a["steps"]), f"{a['bpb_start']:.3f}", f"{a['bpb_end']:.3f}", f"{a['bpb_local_only']:.3f}",
            f"{a['shared_gain']:+.3f}", _signed(a["team_gain"]), _signed(a["others_gain"]), str(a["pushes"]),
            str(a["refused"]), str(a["promoted_to_agent"]), str(a["removed_after_consensus"]),
            "-" if a["comm_fraction"] is None else f"{100 * a['comm_fraction']:.1f}"]


def table(s: dict[str, Any]) -> FitTable:
    """The agents of a summary (fits any width; see :class:`swarm.console.FitTable`)."""
    return FitTable("run summary: held-out bits per byte (lower is better)", AGENT_HEADERS,
                    [_agent_cells(a) for a in s["agents"]])


def render(s: dict[str, Any]) -> Group:
    """What ``swarm run`` prints at the end: the agents, the servers, what the gains are measured
    against, the verdict."""
    servers = {x["level"]: {"version": x["version"], "screened_fraction": x.get("screened_fraction"),
                            "rank": x.get("rank"), "crystallised_fraction": x.get("crystallised_fraction"),
                            "stats": {"merges": x["merges"], "accepted": x["accepted"], "rejected": x["refused"],
                                      "forwarded": x["forwarded"], "promotions": x["promotions"],
                                      "removed": x["removed"], "rejected_proposals": x.get("refused_proposals", {})}}
               for x in s["servers"]}
    return Group(table(s), servers_table(servers, "level servers at the end"), Text(GAINS), Text(verdict(s)))


def to_markdown(s: dict[str, Any]) -> str:
    """summary.md: the verdict, what the gains are measured against, the agents' and servers' tables."""
    stop = s.get("stopped_by")
    stopped = [f"Stopped by {stop} ({s['state']}); continue with `swarm run --resume {s['run_dir']}`.", ""] \
        if stop else []
    lines = ["# Run summary", "", *stopped, verdict(s, details=False), "", GAINS, "", NAMES, "",
             "| " + " | ".join(AGENT_HEADERS) + " |", "|---" * len(AGENT_HEADERS) + "|"]
    lines += ["| " + " | ".join(_agent_cells(a)) + " |" for a in s["agents"]]
    asked = [a for a in s["agents"] if a.get("cache", {}).get("lookups")]
    if asked:
        lines += ["", "Trajectory caches (agents asked through `swarm query generate --agent`):", "",
                  "| agent | lookups | hits | hit rate | internalised | failed | evicted | entries |",
                  "|---|---|---|---|---|---|---|---|"]
        for a in asked:
            c = a["cache"]
            lines.append(f"| {a['agent']} | {c['lookups']} | {c['hits']} | {c['hit_rate']:.2f} | "
                         f"{c['internalised']} | {c['failed']} | {c['evicted']} | {c['entries']} |")
    lines += ["", "| level server | version | merges | pushes in | pushes refused | forwards up | circuits in | "
              "circuits up | proposals refused |", "|---" * 9 + "|"]
    for x in s["servers"]:
        refused = ", ".join(f"{k} {v}" for k, v in x["refused"].items()) or "0"
        proposals = ", ".join(f"{k} {v}" for k, v in x.get("refused_proposals", {}).items()) or "0"
        lines.append(f"| {x['level']} | {x['version']} | {x['merges']} | {x['accepted']} | {refused} | "
                     f"{x['forwarded']} | {x['promotions']} | {x['removed']} | {proposals} |")
    return "\n".join(lines) + "\n"
