"""What a run looks like while it runs: one snapshot dict, rendered by ``swarm run`` and ``swarm status``.

The driver keeps a snapshot (agents' latest records, servers' statuses) and writes it to
``<run dir>/status.json`` atomically on every refresh, so ``swarm status`` can show a
running (or finished) swarm from any shell without joining its Ray cluster.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table

from swarm.rundir import RunDir


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _cache(c: dict[str, Any] | None) -> str:
    """Trajectory-cache hits as ``hits/lookups``, '-' before any lookup."""
    return f"{c['hits']}/{c['lookups']}" if c and c.get("lookups") else "-"


def _internalised(c: dict[str, Any] | None) -> str:
    """Internalised (and failed, if any) cache entries."""
    if not c or not (c.get("internalised") or c.get("failed")):
        return "-"
    return f"{c['internalised']}" + (f" ({c['failed']} failed)" if c.get("failed") else "")


def render(snap: dict[str, Any]) -> Group:
    """Tables of agents and servers for a snapshot (see :class:`Snapshot`)."""
    elapsed = max(1e-9, snap.get("updated", time.time()) - snap["started"])
    agents = Table(title=f"agents ({snap['state']}, {elapsed:.0f} s)", title_justify="left")
    for col in ("agent", "step", "steps/s", "train bpb", "held-out bpb", "pushes", "refused", "promoted", "removed",
                "comm %", "cache hits", "internalised"):
        agents.add_column(col, justify="left" if col == "agent" else "right")
    for aid, r in sorted(snap["agents"].items()):
        busy = r.get("compute_s", 0) + r.get("comm_s", 0)
        done = r["step"] - snap.get("start_steps", {}).get(aid, 0)
        agents.add_row(aid, f"{r['step']}/{snap['steps']}", f"{done / elapsed:.2f}", _fmt(r.get("train_bpb")),
                       _fmt(r.get("eval_bpb")), str(r.get("pushes", 0)), str(r.get("rejected", 0)),
                       str(r.get("promoted", 0)), str(r.get("removed", 0)),
                       f"{100 * r.get('comm_s', 0) / busy:.1f}" if busy else "-", _cache(r.get("cache")),
                       _internalised(r.get("cache")))
    servers = Table(title="level servers", title_justify="left")
    for col in ("level", "version", "merges", "accepted", "refused", "promotions", "removed", "forwarded",
                "screened"):
        servers.add_column(col, justify="left" if col == "level" else "right")
    for name, s in snap["servers"].items():
        st = s.get("stats", {})
        refused = sum(st.get("rejected", {}).values()) + sum(st.get("rejected_proposals", {}).values())
        servers.add_row(name, str(s.get("version", "-")), str(st.get("merges", 0)), str(st.get("accepted", 0)),
                        str(refused), str(st.get("promotions", 0)), str(st.get("removed", 0)),
                        str(st.get("forwarded", 0)), _fmt(s.get("screened_fraction"), ".2f"))
    return Group(agents, servers)


class Snapshot(dict):
    """The run's live state; ``write`` puts it in the run directory's ``status.json``."""

    def __init__(self, run_dir: RunDir, steps: int) -> None:
        super().__init__(run_dir=str(run_dir.path), started=time.time(), updated=time.time(), state="starting",
                         steps=steps, agents={}, servers={}, start_steps={})
        self.run_dir = run_dir

    def write(self) -> None:
        self["updated"] = time.time()
        self.run_dir.write_status(self)
