"""Synthetic robustness study of the merges: a known true gradient, honest noise, attackers.

    python bench/robustness.py            # K in {10, 25}, 0-40% attackers, 3 seeds (~2 min on 2 cores)
    python bench/robustness.py --quick    # K = 10, 0 and 20%, 1 seed

Per trial: a true gradient mu ~ N(0, I_d); honest pushes g = mu + sigma * noise with
sigma = 3 (per-agent SNR < 1, where merging matters); f attackers send an omniscient
attack (layers.merge.attacks) computed from the honest pushes of that round. Benign
conflict replaces attackers by honest agents whose true gradient is another draw mu'.
Each trial runs 5 rounds (fresh noise, same mu) so that stateful rules (resonance,
centered clipping) use their centre; the last round is scored. Rules that assume a
number of attackers (trimmed mean, Krum, multi-Krum) are told the true f: an advantage.
Metrics: cosine to mu; wrong-sign mass sum_j |u_j| [sign u_j != sign mu_j] / sum_j |u_j|;
progress <u, mu> / ||mu||^2. ``resonance_no_gain`` (leak 1, beta 0) isolates the gain's effect.
Writes bench/results/robustness.json and docs/results/robustness.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from layers.merge import ResonanceConfig, make_aggregator  # noqa: E402
from layers.merge.attacks import ATTACKS, attack_updates  # noqa: E402

RULES = ("resonance", "resonance_no_gain", "mean", "median", "trimmed_mean", "krum", "multi_krum", "centered_clipping",
         "sign_majority", "and_mask", "ties")
SCENARIOS = (*ATTACKS, "benign_conflict")
D, SIGMA, ROUNDS = 2000, 3.0, 5


def build(rule: str, f: int):
    if rule == "resonance_no_gain":  # ablation: leak 1, beta 0 = clipping + vote-certified elect, no gain
        return make_aggregator("resonance", config=ResonanceConfig(leak=1.0, beta=0.0))
    if rule in ("trimmed_mean", "krum", "multi_krum"):
        return make_aggregator(rule, f=max(1, f))
    return make_aggregator(rule)


def trial(rule: str, scenario: str, k: int, f: int, seed: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(D, generator=gen)
    other = torch.randn(D, generator=gen)  # the minority's objective under benign conflict
    agg = build(rule, f)
    for _ in range(ROUNDS):
        honest_mu = [mu] * (k - f) + ([other] * f if scenario == "benign_conflict" else [])
        honest = torch.stack([m + SIGMA * torch.randn(D, generator=gen) for m in honest_mu])  # (K_h, D)
        if scenario == "benign_conflict":
            pushes = honest
        else:
            pushes = torch.cat([honest, attack_updates(scenario, honest, f, n=k, generator=gen)])
        out = agg.aggregate(list(pushes))
    cos = float(torch.nn.functional.cosine_similarity(out, mu, dim=0))
    wrong = float((out.abs() * (torch.sign(out) != torch.sign(mu))).sum() / out.abs().sum().clamp_min(1e-30))
    progress = float(out @ mu / (mu @ mu))  # 1: a full step along the truth; sees attacks that only shrink it
    return {"cosine": cos, "wrong_sign_mass": wrong, "progress": progress}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "robustness.md")
    args = parser.parse_args(argv)
    ks, fractions, seeds = ((10,), (0.0, 0.2), (0,)) if args.quick else ((10, 25), (0.0, 0.1, 0.2, 0.3, 0.4), (0, 1, 2))
    results = []
    for k in ks:
        for scenario in SCENARIOS:
            for frac in fractions:
                f = round(frac * k)
                if f == 0 and scenario != SCENARIOS[0]:
                    continue  # the clean cell is the same for every scenario
                for rule in RULES:
                    runs = [trial(rule, scenario, k, f, 1000 * s + k) for s in seeds]
                    cell = {"K": k, "scenario": "clean" if f == 0 else scenario, "fraction": frac, "f": f,
                            "rule": rule}
                    for metric in ("cosine", "wrong_sign_mass", "progress"):
                        values = [r[metric] for r in runs]
                        cell[metric] = statistics.mean(values)
                        cell[f"{metric}_std"] = statistics.pstdev(values)
                    results.append(cell)
            print(f"K={k} {scenario}: done", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"setup": {"d": D, "sigma": SIGMA, "rounds": ROUNDS, "seeds": list(seeds), "quick": args.quick},
               "cells": results}
    (args.out / "robustness.json").write_text(json.dumps(payload, indent=2) + "\n")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(report(results, ks, fractions, seeds))
    print(f"wrote {args.out / 'robustness.json'} and {args.doc}")
    return payload


def _cell(results, k, scenario, frac, rule):
    want = "clean" if round(frac * k) == 0 else scenario
    return next(c for c in results if c["K"] == k and c["scenario"] == want and c["fraction"] == frac
                and c["rule"] == rule)


def report(results, ks, fractions, seeds) -> str:
    lines = ["# Robustness of the merges (synthetic)", "",
             "Made by `python bench/robustness.py` (this file is its output). Setup: d = "
             f"{D}, honest pushes = mu + {SIGMA} x N(0, I) (per-agent SNR < 1), {ROUNDS} rounds per trial, "
             f"{len(seeds)} seed(s), mean +- std over seeds. Attackers are omniscient; trimmed mean, Krum and "
             "multi-Krum are told the true number of attackers. `benign_conflict`: the 'attackers' are honest "
             "agents with a different true gradient (scored against the majority's).", ""]
    losses = []
    notes = {"cosine": "cosine to the true gradient", "wrong_sign_mass": "share of |u| with the wrong sign",
             "progress": "<u, mu> / ||mu||^2: the step taken along the truth (1 = the true gradient); cosine "
                         "cannot see attacks that only shrink the step, such as sign_flip and ipm"}
    for metric, better in (("cosine", max), ("wrong_sign_mass", min), ("progress", max)):
        lines += [f"## {metric.replace('_', ' ')}: {notes[metric]} ({'higher' if better is max else 'lower'} "
                  "is better)", ""]
        for k in ks:
            for scenario in SCENARIOS:
                lines += [f"### K = {k}, {scenario}", "",
                          "| rule | " + " | ".join(f"{int(fr * 100)}%" for fr in fractions) + " |",
                          "|---|" + "---:|" * len(fractions)]
                for rule in RULES:
                    cells = [_cell(results, k, scenario, fr, rule) for fr in fractions]
                    row = []
                    for fr, c in zip(fractions, cells, strict=True):
                        best = better(_cell(results, k, scenario, fr, r)[metric] for r in RULES)
                        text = f"{c[metric]:.3f} +- {c[f'{metric}_std']:.3f}"
                        row.append(f"**{text}**" if c[metric] == best else text)
                    lines.append(f"| {rule} | " + " | ".join(row) + " |")
                lines.append("")
                if metric == "cosine":
                    for fr in fractions:
                        res = _cell(results, k, scenario, fr, "resonance")
                        winner = max((r for r in RULES if r != "resonance_no_gain"),
                                     key=lambda r: _cell(results, k, scenario, fr, r)["cosine"])
                        best = _cell(results, k, scenario, fr, winner)
                        if winner != "resonance" and best["cosine"] - res["cosine"] > max(best["cosine_std"], 0.01):
                            losses.append(f"- K = {k}, {scenario}, {int(fr * 100)}%: resonance {res['cosine']:.3f}, "
                                          f"{winner} {best['cosine']:.3f}")
    lines += ["## Where resonance loses (cosine below the best rule by more than the best's std)", ""]
    lines += sorted(set(losses)) or ["- nowhere in this grid"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
