"""The report's answers to the seed's open questions: the sweeps and specialisation (a mixin of
:class:`swarm.experiment.report.Report`, which provides ``jobs``, ``team``, ``w``, ``table``, ``plot``)."""

from __future__ import annotations

import json
import math
from typing import Any

from swarm.experiment import plots
from swarm.experiment.metrics import average, mean_std

MAIN = ["isolated", "fedavg", "hier_mean", "full"]


def fmt(ms: tuple[float, float], digits: int = 3) -> str:
    m, s = ms
    return "n/a" if not math.isfinite(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def team_metric(job: dict[str, Any], key: str) -> float:
    return average(a.get(key) for a in job["team"]["agents"].values())


class SweepSections:
    def section_sweeps(self) -> None:
        sweep = [j for j in self.jobs if j["id"].startswith("sweep/")]
        sw = self.exp["sweep"]
        default = [j for j in self.team.get(sw["arm"], []) if j["seed"] in sw["seeds"]]
        if not sweep:
            return
        self.w("## The seed's open questions", "")
        cfg = self.stamp.get("defaults", {})  # the configured value of each swept setting

        def points(name: str, default_value) -> dict:
            out: dict = {}
            for j in sweep:
                if j.get("sweep") == name:
                    out.setdefault(json.dumps(j["value"]), []).append(j)
            if default and default_value is not None:
                out.setdefault(json.dumps(default_value), []).extend(default)
            return dict(sorted(out.items(), key=lambda kv: json.loads(kv[0])))

        tr = points("traces", cfg.get("traces"))
        self.w("### Which autocorrelation window works best", "",
               "Trace-bank size K (the slowest trace's timescale is tau0 x golden ratio^(K-1) updates): more traces "
               "= a longer window a circuit must stay stable over before promotion.", "")
        self.table(["K traces", "teammates bits/byte", "context->agent promotions", "agent->swarm promotions"],
                   [[k, fmt(mean_std([team_metric(j, "team") for j in js])),
                     fmt(mean_std([j["team"]["promotions"].get("context->agent", 0) for j in js]), 1),
                     fmt(mean_std([j["team"]["promotions"].get("agent->swarm", 0) for j in js]), 1)]
                    for k, js in tr.items()])
        ph = points("phase", cfg.get("phase"))
        self.w("### Where the phase thresholds should sit", "")
        lvls = list(default[0]["team"]["screened"]) if default else []
        self.table(["theta_on, theta_off", "teammates bits/byte", *[f"screened {v} (end)" for v in lvls]],
                   [[k, fmt(mean_std([team_metric(j, "team") for j in js])),
                     *[fmt(mean_std([j["team"]["screened"].get(v, [math.nan])[-1] for j in js]), 2) for v in lvls]]
                    for k, js in ph.items()])
        sp = points("switch", cfg.get("switch_steps"))
        self.w("### When forgetting still occurs", "",
               "Forgetting of the first package against the length of the switch to a new one:", "")
        self.table(["switch steps", "forgetting (bits/byte)", "new-package gain"],
                   [[k, fmt(mean_std([j["switch"]["forgetting"] for j in js if "switch" in j]), 4),
                     fmt(mean_std([j["switch"]["new_gain"] for j in js if "switch" in j]), 4)] for k, js in sp.items()])

    def section_server_lr(self) -> None:
        sweep = [j for j in self.jobs if j.get("sweep") == "server_lr"]
        if not sweep:
            return
        sw, default_lr = self.exp["sweep"], self.stamp.get("defaults", {}).get("server_lr")
        self.w("### Where sharing helps: the shared levels' step size", "",
               "Teammates' held-out bits per byte against the servers' step size (the configured one is the team "
               "job itself); isolated agents for reference: " + fmt(self.arm_stat("isolated", "team")) + ".", "")
        rows, series = [], {}
        for arm in sw["server_lr_arms"]:
            pts: dict[float, list] = {}
            for j in sweep:
                if j["arm"] == arm:
                    pts.setdefault(j["value"], []).append(j)
            pts.setdefault(default_lr, []).extend(j for j in self.team.get(arm, []) if j["seed"] in sw["seeds"])
            xs = sorted(pts)
            stats = [mean_std([team_metric(j, "team") for j in pts[x]]) for x in xs]
            series[arm] = (xs, [m for m, _ in stats])
            rows += [[arm, f"{x:g}", fmt(st_), fmt(mean_std([team_metric(j, "own") for j in pts[x]]))]
                     for x, st_ in zip(xs, stats, strict=True)]
        self.table(["arm", "server lr", "teammates bits/byte", "own bits/byte"], rows)
        self.plot(plots.lines(self.dir / "server_lr.png", "teammates' bits per byte vs the servers' step size",
                              "server lr", "bits/byte", series, logx=True), "server lr")

    def section_specialisation(self) -> None:
        if not self.team:
            return
        self.w("### How resonance affects specialisation", "",
               "Cosine between agents' agent-level B (within a team / across teams) and the gap between an "
               "agent's teammates' and own bits per byte (larger: more specialised).", "")
        rows = []
        for a in [x for x in [*MAIN, "agg_mean"] if x in self.team]:
            js = self.team[a]
            rows.append([a, fmt(mean_std([j["team"]["specialisation"]["within_team"] for j in js])),
                         fmt(mean_std([j["team"]["specialisation"]["across_teams"] for j in js])),
                         fmt(mean_std([team_metric(j, "team") - team_metric(j, "own") for j in js]))])
        self.table(["arm", "cosine within team", "cosine across teams", "teammates - own bits/byte"], rows)

