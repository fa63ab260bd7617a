"""The end of a run: did bits per byte fall, what did the shared levels contribute, what moved up.

Every agent is evaluated on its held-out files three ways: before learning (recorded when
it started), at the end with all levels, and at the end with its local levels only
(context + agent). ``shared_gain`` = local-only minus all-levels: the bits per byte the
pulled team/domain/foundation levels are worth to that agent. It is also evaluated on its
teammates' and the other teams' held-out files, with the base alone and with all its
levels: ``team_gain`` and ``others_gain`` say how far what it learned carries over.
"""

from __future__ import annotations

import json
from typing import Any

import ray
from rich.table import Table


def summarize(run) -> dict[str, Any]:
    """Evaluate the agents, collect server stats, write summary.json + summary.md, print a table."""
    local = run.cfg.levels.names[:2]
    ids = list(run.agents)
    full = ray.get([run.agents[a].evaluate.remote(None) for a in ids])
    own = ray.get([run.agents[a].evaluate.remote(local) for a in ids])
    transfer = _transfer(run, ids)
    agents = []
    for aid, f, o in zip(ids, full, own, strict=True):
        rec = run.snap["agents"][aid]
        busy = rec["compute_s"] + rec["comm_s"]
        agents.append({"agent": aid, "steps": rec["step"], "bpb_start": rec["eval_start"], "bpb_end": f,
                       "bpb_local_only": o, "shared_gain": o - f, "pushes": rec["pushes"],
                       "refused": rec["rejected"], "promoted_to_agent": rec["promoted"],
                       "removed_after_consensus": rec["removed"],
                       "comm_fraction": rec["comm_s"] / busy if busy else 0.0,
                       "cache": rec.get("cache", {}), **transfer[aid]})
    servers = []
    for name, st in run.snap["servers"].items():
        s = st.get("stats", {})
        servers.append({"level": name, "version": st["version"], "merges": s.get("merges", 0),
                        "accepted": s.get("accepted", 0), "refused": s.get("rejected", {}),
                        "promotions": s.get("promotions", 0), "removed": s.get("removed", 0),
                        "forwarded": s.get("forwarded", 0), "warnings": st.get("warnings", [])})
    n = len(agents)
    summary = {"run_dir": str(run.dir), "state": run.snap["state"], "agents": agents, "servers": servers,
               "mean_bpb_start": sum(a["bpb_start"] for a in agents) / n,
               "mean_bpb_end": sum(a["bpb_end"] for a in agents) / n,
               "mean_shared_gain": sum(a["shared_gain"] for a in agents) / n,
               "wall_s": run.snap["updated"] - run.snap["started"]}
    run.rundir.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    run.rundir.summary_md.write_text(to_markdown(summary))
    run.console.print(table(summary))
    run.console.print(verdict(summary))
    return summary


def _transfer(run, ids: list[str]) -> dict[str, dict[str, float | None]]:
    """Per agent: bits/byte on teammates' and other teams' held-out windows, base alone vs all levels."""
    from agents.text import Windows

    windows = dict(zip(ids, ray.get([run.agents[a].held_out.remote() for a in ids]), strict=True))
    team = {s.id: s.swarm for s in run.topology.agents}
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


def verdict(s: dict[str, Any]) -> str:
    promoted = sum(x["promotions"] for x in s["servers"])
    merges = sum(x["merges"] for x in s["servers"])
    gain = s["mean_shared_gain"]
    return (f"Held-out bits per byte went from {s['mean_bpb_start']:.3f} to {s['mean_bpb_end']:.3f} (mean of "
            f"{len(s['agents'])} agents). The shared levels made {merges} merges and accepted {promoted} promoted "
            f"circuits; with them switched off the agents would be {abs(gain):.3f} bits/byte "
            + ("worse" if gain >= 0 else "better") + f". Details: {s['run_dir']}/summary.md")


def table(s: dict[str, Any]) -> Table:
    t = Table(title="run summary: held-out bits per byte (lower is better)", title_justify="left")
    for col in ("agent", "steps", "start", "end", "local levels only", "shared gain", "teammates' gain",
                "other teams' gain", "pushes", "refused", "promoted ctx→agent", "comm %"):
        t.add_column(col, justify="left" if col == "agent" else "right")
    for a in s["agents"]:
        t.add_row(a["agent"], str(a["steps"]), f"{a['bpb_start']:.3f}", f"{a['bpb_end']:.3f}",
                  f"{a['bpb_local_only']:.3f}", f"{a['shared_gain']:+.3f}", _signed(a["team_gain"]),
                  _signed(a["others_gain"]), str(a["pushes"]), str(a["refused"]), str(a["promoted_to_agent"]),
                  f"{100 * a['comm_fraction']:.1f}")
    return t


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def to_markdown(s: dict[str, Any]) -> str:
    lines = ["# Run summary", "", verdict(s), "",
             "Gains are bits per byte saved (positive: better): shared = all levels vs local levels only on "
             "the agent's own held-out files; teammates' / other teams' = all its levels vs the base alone on "
             "their held-out files.", "",
             "| agent | steps | bpb start | bpb end | local levels only | shared gain | teammates' gain | "
             "other teams' gain | pushes | refused | promoted | comm % |", "|---" * 12 + "|"]
    for a in s["agents"]:
        lines.append(f"| {a['agent']} | {a['steps']} | {a['bpb_start']:.3f} | {a['bpb_end']:.3f} | "
                     f"{a['bpb_local_only']:.3f} | {a['shared_gain']:+.3f} | {_signed(a['team_gain'])} | "
                     f"{_signed(a['others_gain'])} | {a['pushes']} | {a['refused']} | "
                     f"{a['promoted_to_agent']} | {100 * a['comm_fraction']:.1f} |")
    asked = [a for a in s["agents"] if a.get("cache", {}).get("lookups")]
    if asked:
        lines += ["", "Trajectory caches (agents asked through `swarm query generate --agent`):", "",
                  "| agent | lookups | hits | hit rate | internalised | failed | evicted | entries |",
                  "|---|---|---|---|---|---|---|---|"]
        for a in asked:
            c = a["cache"]
            lines.append(f"| {a['agent']} | {c['lookups']} | {c['hits']} | {c['hit_rate']:.2f} | "
                         f"{c['internalised']} | {c['failed']} | {c['evicted']} | {c['entries']} |")
    lines += ["", "| level server | version | merges | accepted | refused | promotions | removed | forwarded |",
              "|---|---|---|---|---|---|---|---|"]
    for x in s["servers"]:
        refused = ", ".join(f"{k} {v}" for k, v in x["refused"].items()) or "0"
        lines.append(f"| {x['level']} | {x['version']} | {x['merges']} | {x['accepted']} | {refused} | "
                     f"{x['promotions']} | {x['removed']} | {x['forwarded']} |")
    return "\n".join(lines) + "\n"
