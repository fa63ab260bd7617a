"""PNG plots of the experiment report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from swarm.experiment.metrics import mean_std  # noqa: E402


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def curves(path: Path, title: str, ylabel: str, series: dict[str, list[list[list[float]]]],
           hline: float | None = None) -> str:
    """One line per label: the mean over seeds of ``[[step, value], ...]`` curves, with a +- std band."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, runs in series.items():
        steps = [p[0] for p in runs[0]]
        stats = [mean_std([r[i][1] for r in runs if i < len(r)]) for i in range(len(steps))]
        m = [s[0] for s in stats]
        sd = [s[1] for s in stats]
        ax.plot(steps, m, marker=".", label=label)
        ax.fill_between(steps, [a - b for a, b in zip(m, sd, strict=True)], [a + b for a, b in zip(m, sd, strict=True)],
                        alpha=0.15)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1, label="target")
    ax.set_xlabel("agent steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def bars(path: Path, title: str, ylabel: str, groups: list[str], series: dict[str, list[tuple[float, float]]],
         ylim_from_data: bool = True) -> str:
    """Grouped bars: ``series[label][i]`` is (mean, std) for ``groups[i]``."""
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(groups) * max(1, len(series)) / 2), 4))
    width = 0.8 / max(1, len(series))
    values = []
    for k, (label, ms) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [m for m, _ in ms], width, yerr=[s for _, s in ms], label=label, capsize=2)
        values += [m for m, _ in ms]
    finite = [v for v in values if v == v]
    if ylim_from_data and finite and min(finite) > 0:
        lo, hi = min(finite), max(finite)
        ax.set_ylim(lo - 0.15 * (hi - lo + 1e-3) - 0.01, hi + 0.15 * (hi - lo + 1e-3) + 0.01)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30 if len(groups) > 5 else 0, ha="right" if len(groups) > 5 else "center",
                       fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def lines(path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, tuple[list[float], list[float]]],
          logy: bool = False, logx: bool = False) -> str:
    """One line per label through ``(xs, ys)``."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
