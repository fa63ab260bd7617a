"""``report.md`` + PNG plots from an experiment's ``jobs/*.json`` (pure: rerun it any time).

Every number is a mean +- sample std over seeds; a seed's number is the mean over its agents.
Bits per byte are measured on held-out files with every level but the context level.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from swarm.config.arms import ABLATIONS, ARMS, BASELINE_AGGREGATORS
from swarm.experiment import headroom, plots
from swarm.experiment.metrics import average, mean_std, steps_to_target
from swarm.experiment.report_sweeps import MAIN, SweepSections, fmt, team_metric


def load(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    stamp = json.loads((run_dir / "experiment.json").read_text())
    jobs = [json.loads(p.read_text()) for p in sorted((run_dir / "jobs").glob("*.json"))]
    return stamp, jobs


def _by(jobs, **match) -> list[dict[str, Any]]:
    return [j for j in jobs if all(j.get(k) == v for k, v in match.items())]


class Report(SweepSections):
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.stamp, self.jobs = load(run_dir)
        self.exp = self.stamp["experiment"]
        self.team = {j["arm"]: [] for j in self.jobs if j["id"].startswith("team/")}
        for j in self.jobs:
            if j["id"].startswith("team/"):
                self.team[j["arm"]].append(j)
        self.lines: list[str] = []
        self.targets: list[tuple[str, str, str]] = []

    def arm_stat(self, arm: str, key: str) -> tuple[float, float]:
        return mean_std([team_metric(j, key) for j in self.team.get(arm, [])])

    def w(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.w("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        self.w(*["| " + " | ".join(r) + " |" for r in rows], "")

    def plot(self, name: str, alt: str) -> None:
        self.w(f"![{alt}]({name})", "")

    # ------------------------------------------------------------------ sections
    def paired(self, a: str, b: str, metric) -> list[float]:
        """``metric(job)`` of arm ``a`` minus arm ``b``, seed by seed (team jobs)."""
        by_seed = {j["seed"]: metric(j) for j in self.team.get(b, [])}
        return [metric(j) - by_seed[j["seed"]] for j in self.team.get(a, []) if j["seed"] in by_seed]

    def noise_note(self, a: str, b: str, metric) -> str:
        """", within seed noise" when the paired difference is within two standard errors, else ""."""
        diffs = self.paired(a, b, metric)
        if len(diffs) < 2:
            return ""
        m, sd = mean_std(diffs)
        return ", within seed noise" if abs(m) <= 2 * sd / math.sqrt(len(diffs)) else ""

    def compare(self, a: str, b: str, key: str = "team") -> str | None:
        """``a`` against ``b`` on ``key``, paired by seed: the mean difference, its standard error, and
        whether it is clear (|mean| > 2 standard errors) or within the seed-to-seed noise."""
        diffs = self.paired(a, b, lambda j: team_metric(j, key))
        if not diffs:
            return None
        m, sd = mean_std(diffs)
        se = sd / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
        if not math.isfinite(se):
            return f"{m:+.4f} (one seed: no noise estimate)"
        elif abs(m) <= 2 * se:
            verdict = "within noise"
        else:
            verdict = f"{a} {'better' if m < 0 else 'worse'}"
        return f"{m:+.4f} (± {se:.4f} s.e., {len(diffs)} seeds): {verdict}"

    def section_answers(self) -> None:
        questions = [("Does the hierarchy beat one flat FedAvg level?", "full", "fedavg"),
                     ("Does the hierarchy beat flat FedAvg with plain mean merging?", "hier_mean", "fedavg"),
                     ("Does our flat FedAvg match Flower's (the outside anchor)?", "fedavg", "flower_fedavg"),
                     ("Does sharing beat learning alone?", "full", "isolated"),
                     ("Does resonance beat mean merging in the hierarchy?", "full", "agg_mean"),
                     ("Does promotion help?", "full", "no_promotion")]
        questions += [(f"Does {a[3:]} help?", "full", a) for a in ABLATIONS if a != "no_promotion"]
        rows = []
        for q, a, b in questions:
            for key, label in (("team", "teammates"), ("own", "own")):
                c = self.compare(a, b, key)
                if c is not None:
                    rows.append([q if label == "teammates" else "", f"{a} - {b}, {label}", c])
        if rows:
            self.w("## Answers, paired by seed", "",
                   "Held-out bits per byte of the first arm minus the second (< 0: the first is better), paired by "
                   "seed; `within noise` when the mean difference is within two standard errors (a rough screen with "
                   "this few seeds, not a significance test).", "")
            self.table(["question", "difference", "bits/byte"], rows)

    def section_team(self) -> None:
        arms = [a for a in MAIN if a in self.team] + [a for a in self.team if a not in MAIN]
        if not arms:
            return
        self.w("## (a) Team learning", "", "Held-out bits per byte (lower is better) on each agent's own files, its "
               "teammates' and the other teams', after the team phase; `base` is the pre-trained model alone.", "")
        iso = self.arm_stat("isolated", "team")[0]
        rows = []
        external = [x for x in arms if ARMS[x].external]  # flower_fedavg: listed right after fedavg
        listed = [x for x in arms if x in MAIN]
        at = listed.index("fedavg") + 1 if "fedavg" in listed else len(listed)
        for a in listed[:at] + external + listed[at:]:
            t = self.arm_stat(a, "team")
            rows.append([a, fmt(self.arm_stat(a, "own")), fmt(t), fmt(self.arm_stat(a, "others")),
                         f"{iso - t[0]:+.3f}" if math.isfinite(iso) else "n/a",
                         f"{mean_std([j['team']['bytes_per_step'] for j in self.team[a]])[0] / 1024:.1f}",
                         ARMS[a].about])
        base = [fmt(self.arm_stat(arms[0], k + "_base")) for k in ("own", "team", "others")]
        rows.append(["base", *base, "", "0", "the pre-trained base, no levels"])
        self.table(["arm", "own", "teammates", "other teams", "teammates gain vs isolated", "KiB pushed / step",
                    "what it is"], rows)
        main = [a for a in MAIN if a in self.team]
        self.plot(plots.bars(self.dir / "team_bpb.png", "held-out bits per byte after the team phase", "bits/byte",
                             main, {k: [self.arm_stat(a, k) for a in main] for k in ("own", "team", "others")}),
                  "team bits per byte")
        self.plot(plots.curves(self.dir / "team_curves.png", "own held-out bits per byte while learning",
                               "bits/byte", {a: [j["team"]["curve"] for j in self.team[a]] for a in main}),
                  "learning curves")
        others = [a for a in arms if a not in MAIN and not ARMS[a].oracle and not ARMS[a].external]  # oracles: headroom
        if others:
            full = self.arm_stat("full", "team")[0]
            self.w("### Ablations and baseline aggregators", "",
                   "Each arm is the full system with one thing changed. `Δ vs full` > 0: the arm is worse on "
                   "teammates' files than the full system, i.e. what it removed helped.", "")
            rows = []
            for a in ["full", *[x for x in ABLATIONS + BASELINE_AGGREGATORS if x in self.team]]:
                t = self.arm_stat(a, "team")
                rows.append([a, fmt(self.arm_stat(a, "own")), fmt(t), f"{t[0] - full:+.4f}", ARMS[a].about])
            self.table(["arm", "own", "teammates", "Δ teammates vs full", "what it is"], rows)
            order = ["full", *[x for x in ABLATIONS + BASELINE_AGGREGATORS if x in self.team]]
            self.plot(plots.bars(self.dir / "ablations.png", "teammates' held-out bits per byte", "bits/byte",
                                 order, {"teammates": [self.arm_stat(a, "team") for a in order]}), "ablations")
        t_full, t_iso, t_fed = (self.arm_stat(a, "team") for a in ("full", "isolated", "fedavg"))
        met = t_full[0] < t_iso[0] and t_full[0] < t_fed[0]
        note = "".join(dict.fromkeys(self.noise_note("full", b, lambda j: team_metric(j, "team"))
                                     for b in ("isolated", "fedavg")))
        self.targets.append(("teammates' bits/byte: full < isolated and < flat FedAvg",
                             f"full {fmt(t_full)}, isolated {fmt(t_iso)}, fedavg {fmt(t_fed)}", _yes(met) + note))

    def section_join(self) -> None:
        joins = {a: [j for j in js if "join" in j] for a, js in self.team.items()}
        joins = {a: js for a, js in joins.items() if js}
        if "isolated" not in joins:
            return
        cold = {j["seed"]: j["join"]["curve"] for j in joins["isolated"]}
        self.w("## (b) A new agent joins a trained team", "",
               f"The joiner (`{joins['isolated'][0]['join']['agent']}`) starts with fresh context and agent levels and "
               "pulls the team's shared levels; the cold agent is the same package learning alone (the isolated "
               "arm). Target: the cold agent's bits per byte at its last step. Speedup: the cold agent's steps to "
               "the target over the joiner's (a joiner at the target before its first step counts 1 step).", "")
        rows, speed, bounded = [], {}, {}
        for a, js in joins.items():
            steps, sp, start = [], [], []
            never = 0
            for j in js:
                curve = j["join"]["curve"]
                target = cold[j["seed"]][-1][1]
                c = steps_to_target(cold[j["seed"]], target)
                s = steps_to_target(curve, target)
                if s is None:  # not within the run: its steps exceed the run, the speedup is below c / run
                    never += 1
                    s = curve[-1][0]
                steps.append(s)
                sp.append(c / max(s, 1))
                start.append(curve[0][1])
            speed[a], bounded[a] = mean_std(sp), never > 0
            rows.append([a, fmt(mean_std(start)), ("> " if never else "") + fmt(mean_std(steps), 1) +
                         (f" ({never} of {len(js)} never reached it)" if never else ""),
                         ("< " if never else "") + fmt(speed[a], 2)])
        self.table(["arm", "joiner bits/byte at step 0", "steps to target", "speedup vs cold"], rows)
        target = average(c[-1][1] for c in cold.values())
        self.plot(plots.curves(self.dir / "join.png", "a joining agent's own held-out bits per byte", "bits/byte",
                               {a: [j["join"]["curve"] for j in js] for a, js in joins.items()}, hline=target), "join")
        if "full" in speed:
            self.targets.append(("joining agent reaches the target >= 2x faster than a cold one",
                                 f"speedup {'< ' if bounded['full'] else ''}{fmt(speed['full'], 2)}",
                                 _yes(speed["full"][0] >= 2 and not bounded["full"])))

    def section_switch(self) -> None:
        sw = {a: [j for j in js if "switch" in j] for a, js in self.team.items()}
        sw = {a: js for a, js in sw.items() if js}
        if not sw:
            return
        self.w("## (c) Context switches: forgetting", "",
               "After the team phase every agent moves to a new package for "
               f"{self.exp['switch']['steps']} steps. Forgetting: bits per byte on its first package after the switch "
               "minus before (> 0: forgot). New-package gain: how much it learned the new package meanwhile.", "")
        rows, forget = [], {}
        for a, js in sw.items():
            forget[a] = mean_std([j["switch"]["forgetting"] for j in js])
            rows.append([a, fmt(mean_std([average(j["switch"]["before"].values()) for j in js])),
                         fmt(mean_std([average(j["switch"]["after"].values()) for j in js])), fmt(forget[a], 4),
                         fmt(mean_std([j["switch"]["new_gain"] for j in js]), 4)])
        self.table(["arm", "first package before", "after", "forgetting", "new-package gain"], rows)
        self.plot(plots.curves(self.dir / "switch.png", "bits per byte on the first package after the switch",
                               "bits/byte", {a: [j["switch"]["curve"] for j in js] for a, js in sw.items()}), "switch")
        if "full" in forget and "fedavg" in forget:
            note = self.noise_note("full", "fedavg", lambda j: j["switch"]["forgetting"] if "switch" in j else math.nan)
            self.targets.append(("less forgetting than flat FedAvg", f"full {fmt(forget['full'], 4)}, "
                                 f"fedavg {fmt(forget['fedavg'], 4)}",
                                 _yes(forget["full"][0] < forget["fedavg"][0]) + note))

    def section_attack(self) -> None:
        att = [j for j in self.jobs if j["kind"] == "attack"]
        if not att:
            return
        clean = {(j["arm"], j["seed"]): j["own"] for j in att if j["fraction"] == 0}
        self.w("## (d) Conflicting and adversarial agents", "",
               "A fraction of the agents are omniscient attackers: after each round of their server's honest pushes "
               "they push crafted gradients (sign flip, scaled x10 sign flip, Gaussian noise, ALIE). Degradation: "
               "the honest agents' own held-out bits per byte minus the same agents' in the clean run (> 0: harm). "
               "Robust baselines are told the number of attackers.", "")
        conds = sorted({(j["attack"], j["fraction"]) for j in att if j["fraction"] > 0}, key=lambda c: (c[1], c[0]))
        arms = list(dict.fromkeys(j["arm"] for j in att))
        deg: dict[tuple[str, str, float], tuple[float, float]] = {}
        rows = []
        for arm in arms:
            clean_own = [average(v.values()) for (a, _), v in clean.items() if a == arm]
            rows.append([arm, "clean", "0", fmt(mean_std(clean_own)), "0"])
            for kind, frac in conds:
                vals, own = [], []
                for j in _by(att, arm=arm, attack=kind, fraction=frac):
                    base = clean.get((arm, j["seed"]))
                    if base:
                        vals.append(average(j["own"][a] - base[a] for a in j["own"]))
                    own.append(average(j["own"].values()))
                deg[(arm, kind, frac)] = mean_std(vals)
                rows.append([arm, kind, f"{frac:.0%}", fmt(mean_std(own)), fmt(deg[(arm, kind, frac)], 4)])
        self.table(["arm", "attack", "attackers", "honest own bits/byte", "degradation"], rows)
        kind = self.exp["attack"]["kind"]
        fr = sorted({f for k, f in conds if k == kind})
        self.plot(plots.lines(self.dir / "attack.png", f"degradation under {kind}", "attacker fraction",
                              "bits/byte lost", {a: ([0.0, *fr], [0.0, *[deg[(a, kind, f)][0] for f in fr]])
                                                 for a in arms}), "attack")
        if "full" in arms and "fedavg" in arms:
            for k, f in conds:
                if abs(f - 0.2) < 1e-9:
                    (d_full, s_full), (d_fed, s_fed) = deg[("full", k, f)], deg[("fedavg", k, f)]
                    measured = f"full {d_full:+.4f} ± {s_full:.4f}, fedavg {d_fed:+.4f} ± {s_fed:.4f}"
                    if d_fed <= s_fed:  # FedAvg itself was not clearly harmed: there is nothing to halve
                        verdict = "not measurable: FedAvg was not degraded beyond seed noise"
                    else:
                        verdict = _yes(d_full <= 0.5 * d_fed)
                    self.targets.append((f"20% attackers ({k}): degradation <= half of FedAvg's", measured, verdict))

    def section_dynamics(self) -> None:
        main = [a for a in MAIN if a in self.team]
        if not main:
            return
        self.w("## Timescales, promotions, screening", "",
               "Two timescales per level, in agent steps. Autocorrelation time: the lag at which B's "
               "self-similarity (mean cosine between snapshots that far apart) drops below 1/e; `≥` when it never "
               "does within the run (the level is slower than the run). Turnover time: how long the level takes to "
               "move by its own size at its current pace, sum ||B_t|| / sum ||B_t - B_t-1|| (measurable on a short "
               "run), on the first and the second half of the run; the ratio to the agent level's turnover in the "
               "same half shows whether the levels' timescale ratios settle.", "")
        rows = []
        for a in main:
            turn = {h: {lvl: mean_std([j["team"]["timescales"][lvl].get(f"turnover_{h}") for j in self.team[a]])[0]
                        for lvl in self.team[a][0]["team"]["timescales"]} for h in ("first", "second")}
            for lvl in _fastest_first(self.team[a][0]["team"]["timescales"]):
                vals = [j["team"]["timescales"][lvl] for j in self.team[a]]
                cens = any(v["censored"] for v in vals)
                ratio = [turn[h][lvl] / turn[h]["agent"] if turn[h].get("agent") else math.nan
                         for h in ("first", "second")]
                rows.append([a, lvl, ("≥ " if cens else "") + fmt(mean_std([v["tau"] for v in vals]), 1),
                             fmt(mean_std([v.get("turnover_first") for v in vals]), 1),
                             fmt(mean_std([v.get("turnover_second") for v in vals]), 1),
                             f"{ratio[0]:.2f} -> {ratio[1]:.2f}"])
        self.table(["arm", "level", "autocorrelation time", "turnover, first half", "turnover, second half",
                    "turnover / agent level's (first -> second half)"], rows)
        full = self.team.get("full") or self.team[main[-1]]
        lv = _fastest_first({lvl for a in main for lvl in self.team[a][0]["team"]["timescales"]})
        self.plot(plots.bars(self.dir / "timescales.png", "turnover time per level (second half)", "agent steps",
                             lv, {a: [mean_std([j["team"]["timescales"].get(lvl, {}).get("turnover_second")
                                                for j in self.team[a]]) for lvl in lv] for a in main},
                             ylim_from_data=False), "timescales")
        bounds = list(dict.fromkeys(b for a in main for b in self.team[a][0]["team"]["promotions"]))
        rows = [[a, *[fmt(mean_std([j["team"]["promotions"].get(b, math.nan) for j in self.team[a]]), 1)
                      for b in bounds]] for a in self.team]
        self.w("Promotions per level boundary over the team phase (all agents / servers of the level):", "")
        self.table(["arm", *bounds], rows)
        screened = {lvl: [j["team"]["screened"][lvl] for j in full] for lvl in full[0]["team"]["screened"]}
        spacing = self.exp["probe_every"]
        self.plot(plots.curves(self.dir / "screened.png", f"screened fraction over time ({full[0]['arm']})",
                               "screened fraction", {lvl: [[[i * spacing, v] for i, v in enumerate(s)] for s in runs]
                                                     for lvl, runs in screened.items()}), "screened")

    def write(self) -> Path:
        seconds = sum(j.get("seconds", 0) for j in self.jobs)
        body_start = len(self.lines)
        for section in (self.section_answers, self.section_team, self.section_join, self.section_switch,
                        self.section_attack, self.section_dynamics, self.section_sweeps, self.section_server_lr,
                        self.section_specialisation):
            section()
        body = self.lines[body_start:]
        self.lines = self.lines[:body_start]
        st = self.stamp
        command = " ".join(["swarm experiment", st["config"],
                            *[o for o in st["overrides"] if not o.startswith("model.name_or_path")]])
        self.w("# Team-learning experiments", "", f"Command: `{command}`", "",
               f"Base: `{st.get('base', '?')}` (pre-trained by `swarm pretrain-base`, cached). ", "",
               f"{len(self.jobs)} jobs, seeds {self.exp['seeds']}, {self.exp['steps']} team-phase steps per agent; "
               f"{seconds / 60:.1f} CPU-minutes of jobs. Config: `config.yaml`.", "")
        per_arm = self.exp.get("arm_overrides") or {}
        if per_arm:
            self.w("Per-arm overrides (`experiment.arm_overrides`; every other arm runs the config as written): "
                   + "; ".join(f"{arm}: `{' '.join(ov)}`" for arm, ov in sorted(per_arm.items())) + ".", "")
        self.w(*headroom.section(self.team, float(self.exp.get("headroom_factor", 5.0))))
        self.w("## Targets", "")
        self.table(["target", "measured", "met"], [list(t) for t in headroom.targets(self.team) + self.targets])
        self.lines += body
        path = self.dir / "report.md"
        path.write_text("\n".join(self.lines).rstrip() + "\n")
        return path


def _fastest_first(levels) -> list[str]:
    order = ["context", "agent", "shared", "swarm", "domain", "foundation"]
    return sorted(levels, key=lambda x: (order.index(x) if x in order else len(order), x))


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def write_report(run_dir: str | Path) -> Path:
    return Report(Path(run_dir)).write()
