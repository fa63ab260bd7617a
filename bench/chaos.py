"""Chaos, the long run: seeded kill schedules over an in-process swarm with real stores, invariants
checked from the stores alone (tests/chaos/harness.py: every acknowledged push applied exactly once,
no version lost, every checkpoint verifies, the live levels equal a replay of the journals).

    python bench/chaos.py            # 4 seeds x 150 ticks, 2 teams x 3 agents, kill rates 0.1 and 0.3
    python bench/chaos.py --quick    # 2 seeds x 100 ticks

Three arms side by side, same seeds: ``calm`` (kill rate 0.1 per tick) and ``storm`` (0.3) with the
level stores on the local disk, and ``storm_s3`` (0.3) with them on a real S3-compatible server
(moto's, on loopback: journals and checkpoints take the object-store path, no rename). Kinds
killed: an agent, a team server, the domain server, the whole driver (everything at once), an agent
between its push's journal write and the ack, a server mid-checkpoint, a team between its forward
being taken and the ack. Writes bench/results/chaos.json (``ratios``: violations per kill, pushes
checked per push acknowledged, storm / calm kills) and chaos.md. Target: 0 violations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos.harness import KINDS, chaos  # noqa: E402
from tests.cluster.s3_server import s3_server, s3_url  # noqa: E402

ARMS = {"calm": (0.1, "local"), "storm": (0.3, "local"), "storm_s3": (0.3, "s3")}


def run_arm(rate: float, seeds: list[int], ticks: int, storage: str = "local") -> dict:
    """Every seed's chaos run at kill ``rate``, summed; ``storage`` ``s3``: the level stores on a real
    S3-compatible server (moto on loopback, tests/cluster/s3_server.py), one prefix per seed."""
    kills, acked, checked, violations, seconds = Counter(), 0, 0, [], 0.0
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp, (s3_server() if storage == "s3" else nullcontext()):
            levels = s3_url(f"chaos-{seed}") if storage == "s3" else None
            start = time.perf_counter()
            report = chaos(Path(tmp), seed=seed, ticks=ticks, kill_rate=rate, teams=2, agents=3, levels=levels)
            seconds += time.perf_counter() - start
        kills.update(report.kills)
        acked, checked = acked + report.acked, checked + report.checked
        violations += [f"seed {seed}: {v}" for v in report.violations]
    return {"kill_rate": rate, "storage": storage, "seeds": seeds, "ticks": ticks,
            "kills": {k: kills.get(k, 0) for k in KINDS},
            "kills_total": sum(kills.values()), "pushes_acked": acked, "pushes_checked": checked,
            "violations": violations, "seconds": round(seconds, 1)}


def main() -> None:
    """Run both arms and write bench/results/chaos.json and chaos.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds x 100 ticks")
    args = ap.parse_args()
    seeds, ticks = ([0, 1], 100) if args.quick else (list(range(4)), 150)
    arms = {name: run_arm(rate, seeds, ticks, storage) for name, (rate, storage) in ARMS.items()}
    calm, storm = arms["calm"], arms["storm"]
    ratios = {"violations_per_kill": sum(len(a["violations"]) for a in arms.values())
              / max(1, sum(a["kills_total"] for a in arms.values())),
              "checked_per_acked": sum(a["pushes_checked"] for a in arms.values())
              / max(1, sum(a["pushes_acked"] for a in arms.values())),
              "storm_over_calm_kills": storm["kills_total"] / max(1, calm["kills_total"])}
    out = {"command": "python bench/chaos.py" + (" --quick" if args.quick else ""), "arms": arms, "ratios": ratios}
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "chaos.json").write_text(json.dumps(out, indent=2) + "\n")
    rows = ["| | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for key in ("kill_rate", "storage", "ticks", "kills_total", *[f"kills.{k}" for k in KINDS], "pushes_acked",
                "pushes_checked", "violations", "seconds"):
        cells = []
        for a in arms.values():
            v = a["kills"][key[6:]] if key.startswith("kills.") else a[key]
            cells.append(str(len(v)) if isinstance(v, list) else str(v))
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    md = [f"# Chaos: {len(seeds)} seeds x {ticks} ticks per arm, 2 teams x 3 agents, level stores on the local "
          "disk or on S3 (moto's server on loopback)",
          "", f"`{out['command']}`", "", *rows, "",
          "Ratios: " + ", ".join(f"{k} {v:.3g}" for k, v in ratios.items()), "",
          "pushes_acked: agent pushes the agents saw acknowledged; pushes_checked: the pushes the stores "
          "hold and the checks cover (agents' at their teams plus teams' forwards at the domain).", "",
          "Invariants (from the stores alone): every store audits clean; each agent's team holds steps "
          "1..last once each, through at least the last step the agent saw acknowledged (the same for "
          "each team at the domain); a replay of every store equals the live level bit for bit; every "
          "kept checkpoint and journal verifies. Target: 0 violations."]
    if any(a["violations"] for a in arms.values()):
        md += ["", "## Violations", *[f"- {name}: {v}" for name, a in arms.items() for v in a["violations"][:20]]]
    (results / "chaos.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
