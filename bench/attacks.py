"""One merge under each attack: cosine of the merge with the true signal, per aggregator (docs/experiments.md,
"Threat model"). Synthetic: 8 honest updates = snr x signal + unit noise, d = 2000, 2 attackers, 5 draws.

    python bench/attacks.py [--snr 0.3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from layers.merge import AGGREGATORS  # noqa: E402
from layers.merge.attacks import ATTACKS, attack_updates  # noqa: E402

RULES = ("mean", "median", "trimmed_mean", "centered_clipping")


def honest(k: int, d: int, snr: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g)
    return torch.stack([snr * mu + torch.randn(d, generator=g) for _ in range(k)]), mu


def merged_cos(pushes: list[torch.Tensor], mu: torch.Tensor, rule: str) -> float:
    agg = AGGREGATORS[rule](f=2) if rule == "trimmed_mean" else AGGREGATORS[rule]()
    return float(torch.nn.functional.cosine_similarity(agg.aggregate(pushes), mu, dim=0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--snr", type=float, default=0.3)
    ap.add_argument("--draws", type=int, default=5)
    args = ap.parse_args()
    print("| attack | " + " | ".join(RULES) + " |")
    clean = {r: sum(merged_cos(list(honest(10, 2000, args.snr, s)[0]), honest(10, 2000, args.snr, s)[1], r)
                    for s in range(args.draws)) / args.draws for r in RULES}
    print("| clean (10 honest) | " + " | ".join(f"{clean[r]:+.2f}" for r in RULES) + " |")
    for kind in ATTACKS:
        row = {r: 0.0 for r in RULES}
        for s in range(args.draws):
            h, mu = honest(8, 2000, args.snr, s)
            x = attack_updates(kind, h, 2, n=10, generator=torch.Generator().manual_seed(s + 1000))
            for r in RULES:
                row[r] += merged_cos(list(torch.cat([h, x])), mu, r) / args.draws
        print(f"| {kind} | " + " | ".join(f"{row[r]:+.2f}" for r in RULES) + " |")


if __name__ == "__main__":
    main()
