"""The headroom check and headroom-normalised results (docs/experiments.md), from team jobs alone.

Headroom is what perfect sharing could gain: isolated agents' held-out bits per byte minus a
central oracle's (``swarm.config.arms`` ``oracle_*``), on the same held-out windows. A seed's
figure for a file group (``team``: teammates' files, ``domain``: domain-mates' in other teams,
``other_domains``, ``own``) is the mean over its agents of that group's bits per byte.

- The workload *qualifies* when team headroom on teammates' files (isolated - team oracle) is at
  least ``factor`` x its sample std over seeds, and team > domain > all-agent headroom there.
- An arm's *fraction of headroom captured* on a file group, per seed:
  ``(isolated - arm) / (isolated - oracle)``, with the oracle of that group's scope (teammates':
  team oracle, domain-mates': domain oracle, other domains': all-agent oracle); mean over seeds with
  a 95 % t interval. 1: the arm gains what the oracle gains; 0: what isolated agents get; < 0: worse.

Pure functions of numbers (tested on hand-made ones); :func:`section` writes the report's part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# file group -> the oracle whose headroom normalises it
GROUP_ORACLE = {"team": "oracle_team", "domain": "oracle_domain", "other_domains": "oracle_all"}
GROUP_LABEL = {"own": "own", "team": "teammates'", "domain": "domain-mates'", "other_domains": "other domains'"}


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` >= 1 degrees of freedom.

    The CDF is integrated (Simpson, 4000 intervals) and inverted by bisection: within 1e-6 of the
    tables (12.7062 for p 0.975, df 1; 2.7764 for df 4).
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile: need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float) -> float:
        n = 4000
        h = x / n
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (nan for fewer than 2 values); nan entries are dropped."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
    return m, sd


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t interval ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)`` (nan bounds for n < 2)."""
    m, sd = mean_sd(values)
    n = sum(1 for v in values if v is not None and math.isfinite(v))
    if n < 2:
        return m, math.nan, math.nan
    half = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return m, m - half, m + half


def per_seed(jobs: Sequence[dict[str, Any]], key: str) -> dict[int, float]:
    """Seed -> the mean over a team job's agents of ``key`` (agents without it are skipped)."""
    out = {}
    for j in jobs:
        vals = [a[key] for a in j["team"]["agents"].values() if a.get(key) is not None]
        if vals:
            out[j["seed"]] = sum(vals) / len(vals)
    return out


def paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """``a - b`` for every seed both have, in seed order."""
    return [a[s] - b[s] for s in sorted(a) if s in b]


def fractions(iso: dict[int, float], arm: dict[int, float], oracle: dict[int, float]) -> list[float]:
    """Per seed (all three present): ``(iso - arm) / (iso - oracle)``; nan where the headroom is 0."""
    seeds = [s for s in sorted(iso) if s in arm and s in oracle]
    return [(iso[s] - arm[s]) / (iso[s] - oracle[s]) if iso[s] != oracle[s] else math.nan for s in seeds]


def check(team: Sequence[float], domain: Sequence[float], everyone: Sequence[float],
          factor: float = 5.0) -> dict[str, Any]:
    """The headroom check on per-seed headrooms on teammates' files (team, domain and all-agent oracles).

    Returns the means and stds, ``strong`` (team mean >= ``factor`` x its std; None with one seed),
    ``ordered`` (team > domain > all means) and ``qualifies`` (both; False when not measurable).
    """
    (t, t_sd), (d, _), (a, _) = mean_sd(team), mean_sd(domain), mean_sd(everyone)
    strong = None if not math.isfinite(t_sd) else t >= factor * t_sd
    ordered = bool(t > d > a)
    return {"team": (t, t_sd), "domain": mean_sd(domain), "all": mean_sd(everyone), "factor": factor,
            "strong": strong, "ordered": ordered, "qualifies": bool(strong) and ordered}


def _ci(m: float, lo: float, hi: float, digits: int = 3) -> str:
    if not math.isfinite(m):
        return "n/a"
    if not math.isfinite(lo):
        return f"{m:.{digits}f} (one seed)"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def section(team_jobs: dict[str, list[dict[str, Any]]], factor: float) -> list[str]:
    """The report's headroom part (markdown lines): the check first, then every arm's fraction of headroom
    captured per file group and its own-file bits per byte against isolated. Empty without the oracles."""
    iso = team_jobs.get("isolated")
    if not iso or not all(team_jobs.get(o) for o in GROUP_ORACLE.values()):
        return []
    value = {arm: {g: per_seed(js, g) for g in GROUP_LABEL} for arm, js in team_jobs.items()}
    hr = {o: paired(value["isolated"]["team"], value[o]["team"]) for o in GROUP_ORACLE.values()}
    res = check(hr["oracle_team"], hr["oracle_domain"], hr["oracle_all"], factor)
    t, t_sd = res["team"]
    strong = "n/a (one seed)" if res["strong"] is None else ("yes" if res["strong"] else "**no**")
    lines = ["## Headroom check", "",
             "Headroom = isolated agents' held-out bits per byte minus a central oracle's, on teammates' files, "
             "paired by seed (mean ± sample std over seeds). The workload qualifies when team headroom >= "
             f"{factor:g} x its seed std and team > domain > all-agent headroom.", "",
             "| oracle | headroom on teammates' files | std over seeds |", "|---|---|---|"]
    for o, label in (("oracle_team", "team"), ("oracle_domain", "domain"), ("oracle_all", "all agents")):
        m, sd = mean_sd(hr[o])
        lines.append(f"| {label} | {m:+.4f} | {sd:.4f} |")
    lines += ["", f"- team headroom >= {factor:g} x std ({t:+.4f} vs {factor:g} x {t_sd:.4f}): {strong}",
              f"- team > domain > all: {'yes' if res['ordered'] else '**no**'}",
              f"- **qualifies: {'yes' if res['qualifies'] else 'no'}**", ""]
    rows = []
    for arm in team_jobs:
        v = value[arm]
        rows.append([arm] + [f"{mean_sd(list(v[g].values()))[0]:.4f}" for g in GROUP_LABEL])
    lines += ["Held-out bits per byte (mean over seeds of the mean over agents):", "",
              "| arm | " + " | ".join(GROUP_LABEL.values()) + " |", "|---" * (len(GROUP_LABEL) + 1) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## Fraction of headroom captured", "",
              "(isolated - arm) / (isolated - oracle) per seed, mean with a 95 % t interval over seeds; the oracle "
              "of each group's scope (teammates': team, domain-mates': domain, other domains': all agents). Own "
              "files: the arm's bits per byte minus isolated (< 0: better), paired by seed.", "",
              "| arm | " + " | ".join(GROUP_LABEL[g] for g in GROUP_ORACLE) + " | own - isolated |",
              "|---" * (len(GROUP_ORACLE) + 2) + "|"]
    for arm in team_jobs:
        if arm == "isolated":
            continue
        cells = [_ci(*mean_ci(fractions(value["isolated"][g], value[arm][g], value[o][g]))) for g, o in
                 GROUP_ORACLE.items()]
        own = mean_ci(paired(value[arm]["own"], value["isolated"]["own"]))
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {_ci(*own, digits=4)} |")
    return lines + [""]


def targets(team_jobs: dict[str, list[dict[str, Any]]], *, capture: float = 0.6) -> list[tuple[str, str, str]]:
    """The issue-17 target rows (target, measured, met) the headroom data can decide: the full system
    captures >= ``capture`` of team headroom on teammates' files with own-file bits per byte no worse than
    isolated (within two standard errors), and it beats each flat FedAvg arm (ours, Flower's) on teammates'
    and domain-mates' files by more than two standard errors, paired by seed. Empty without full/isolated."""
    if not team_jobs.get("full") or not team_jobs.get("isolated"):
        return []
    value = {arm: {g: per_seed(js, g) for g in GROUP_LABEL} for arm, js in team_jobs.items()}
    rows = []
    if team_jobs.get("oracle_team"):
        frac = mean_ci(fractions(value["isolated"]["team"], value["full"]["team"], value["oracle_team"]["team"]))
        own = paired(value["full"]["own"], value["isolated"]["own"])
        m, se = _mean_se(own)
        own_ok = m <= 2 * se if math.isfinite(se) else m <= 0
        rows.append((f"full captures >= {capture:.0%} of team headroom on teammates' files, own files no worse "
                     "than isolated", f"captured {_ci(*frac)}; own - isolated {m:+.4f} (± {se:.4f} s.e.)",
                     "yes" if frac[0] >= capture and own_ok else "**no**"))
    for flat in ("fedavg", "flower_fedavg"):
        if not team_jobs.get(flat):
            continue
        cells, ok = [], True
        for g in ("team", "domain"):
            m, se = _mean_se(paired(value["full"][g], value[flat][g]))
            cells.append(f"{GROUP_LABEL[g]} {m:+.4f} (± {se:.4f} s.e.)")
            ok = ok and math.isfinite(se) and m < -2 * se
        rows.append((f"full beats {flat} on teammates' and domain-mates' files by > 2 s.e. (full - {flat})",
                     "; ".join(cells), "yes" if ok else "**no**"))
    return rows


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    m, sd = mean_sd(values)
    n = sum(1 for v in values if math.isfinite(v))
    return m, sd / math.sqrt(n) if n > 1 else math.nan
