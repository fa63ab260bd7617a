"""The live tables and the summary read whole at 80 columns, in a 160-column log file, and narrower:
no agent name or number is ever cut, and every figure says when it was measured."""

import io
import re
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rich.console import Console

from swarm.console import FitTable, wide_console
from swarm.run.display import LiveView, comm_percent, held_out, progress_line, render
from swarm.run.summary import render as render_summary
from swarm.run.summary import to_markdown

NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-./", min_size=1, max_size=70).filter(lambda s: s.strip("/"))
BIG = st.integers(0, 10**12)
SERVERS = ("foundation", "domain/python", "swarm/text", "swarm/net")


def snapshot(names, n, *, step=40, eval_step=40, compute_s=100.0):
    """A status snapshot of a run with agents ``names`` whose counters are all ``n``."""
    now = time.time()
    agents = {a: {"step": step, "train_bpb": 5.912 + i, "eval_bpb": 6.17 + i, "eval_step": eval_step,
                  "eval_start": 8.108, "pushes": n, "rejected": n + 1, "promoted": n + 2, "removed": n + 3,
                  "comm_s": 1.25, "compute_s": compute_s, "cache": {"lookups": n + 4, "hits": n + 5}}
              for i, a in enumerate(names)}
    servers = {s: {"version": n + 6, "screened_fraction": 0.125, "rank": n + 13, "crystallised_fraction": 0.375,
                   "stats": {"merges": n + 7, "accepted": n + 8, "rejected": {"stale": n + 9}, "promotions": n + 10,
                             "removed": n + 11, "forwarded": n + 12, "rejected_proposals": {"few agents": 1}}}
               for s in SERVERS}
    return {"started": now - 45, "updated": now, "state": "running", "steps": step, "agents": agents,
            "servers": servers, "start_steps": dict.fromkeys(names, 0)}


def summary(names, n, pretrained=False):
    agents = [{"agent": a, "steps": 40 + n, "bpb_start": 8.108, "bpb_end": 6.17, "bpb_local_only": 6.9,
               "shared_gain": 0.73, "team_gain": 1.6 if i else None, "others_gain": -0.25, "pushes": n,
               "refused": n + 1, "promoted_to_agent": n + 2, "removed_after_consensus": n + 3,
               "comm_fraction": 0.0125, "cache": {}} for i, a in enumerate(names)]
    servers = [{"level": s, "version": n, "merges": n + 1, "accepted": n + 2, "refused": {}, "refused_proposals": {},
                "promotions": n + 3, "removed": n + 4, "forwarded": n + 5} for s in SERVERS]
    return {"run_dir": "runs/r", "state": "finished", "agents": agents, "servers": servers,
            "base_pretrained": pretrained, "mean_bpb_start": 8.108, "mean_bpb_end": 6.17, "mean_shared_gain": 0.73}


def rendered(renderable, width: int, terminal: bool = True) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), force_terminal=terminal, color_system=None)
    console.print(renderable)
    text = console.export_text()
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines()), text
    return text


def assert_whole(text: str, cells) -> None:
    """Every cell appears as a whole word (not cut, not folded onto two lines)."""
    for cell in cells:
        assert re.search(rf"(?<!\S){re.escape(cell)}(?!\S)", text), (cell, text)


def live_cells(snap):
    out = []
    for a, r in snap["agents"].items():
        out += [a, f"{r['step']}/{snap['steps']}", f"{r['eval_bpb']:.3f}", f"@{r['eval_step']}"]
        out += [str(r[k]) for k in ("pushes", "rejected", "promoted", "removed")]
    for s in snap["servers"].values():
        out += [str(s["version"])] + [str(s["stats"][k]) for k in ("merges", "accepted", "promotions", "removed",
                                                                    "forwarded")]
        out += [str(s["rank"])]
    return out + list(snap["servers"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(NAME, min_size=1, max_size=5, unique=True), n=BIG, width=st.sampled_from([40, 80, 120, 160]))
def test_live_tables_never_cut_a_name_or_a_number(names, n, width):
    assume(all(len(a) < width for a in names))  # a name wider than the terminal cannot be shown whole
    snap = snapshot(names, n)
    assert_whole(rendered(render(snap), width), live_cells(snap))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(NAME, min_size=1, max_size=5, unique=True), n=BIG, width=st.sampled_from([40, 80, 160]))
def test_the_summary_never_cuts_a_name_or_a_number(names, n, width):
    assume(all(len(a) < width for a in names))
    s = summary(names, n)
    cells = [c for a in s["agents"] for c in (a["agent"], str(a["steps"]), str(a["pushes"]), str(a["refused"]),
                                               str(a["promoted_to_agent"]), "8.108", "6.170", "+0.730", "-0.250")]
    assert_whole(rendered(render_summary(s), width), cells + [str(n + k) for k in range(1, 6)])


def test_default_names_at_80_columns_fit_in_two_parts_and_long_ones_fall_back_to_blocks():
    names = ["python/text/json", "python/text/email", "python/net/http", "python/net/urllib"]
    text = rendered(render(snapshot(names, 123_456)), 80)
    assert 2 <= text.count("agents (running") <= 3 and "(continued)" in text  # split, not cut
    long = [n + "_with_a_much_longer_descriptive_suffix_here" for n in names]
    text = rendered(render(snapshot(long, 123_456_789)), 80)
    assert all(line.strip() in long for line in text.splitlines() if line.startswith("python/"))  # a block each
    assert_whole(text, live_cells(snapshot(long, 123_456_789)))


def test_a_log_file_gets_160_columns_and_whole_names():
    names = ["python/text/json_" + "x" * 50, "python/net/http_" + "y" * 50]
    out = io.StringIO()
    console = wide_console(Console(file=out))
    assert not console.is_terminal and console.width == 160
    console.print(render(snapshot(names, 10**9)))
    console.print(render_summary(summary(names, 10**9)))
    text = out.getvalue()
    assert "…" not in text and all(len(line) <= 160 for line in text.splitlines())
    assert_whole(text, [*names, str(10**9), str(10**9 + 2)])


def test_figures_say_when_they_were_measured_and_dash_before():
    assert held_out({"eval_bpb": 6.1704, "eval_step": 50}) == "6.170 @50"
    assert held_out({"eval_bpb": None}) == "-"
    assert comm_percent(0.4, 0.0) == "-"  # the first pull alone is not a share of anything
    assert comm_percent(1.0, 3.0) == "25.0"
    snap = snapshot(["a", "b"], 0, step=0, eval_step=0, compute_s=0.0)
    snap["agents"]["a"]["train_bpb"] = snap["agents"]["b"]["train_bpb"] = None
    text = rendered(render(snap), 160)
    assert "100.0" not in text and "6.170 @0" in text
    line = progress_line(snapshot(["a", "b"], 0, step=30, eval_step=30))
    assert "held-out bpb 6.670 @30" in line and "steps 60/60" in line
    snap = snapshot(["a", "b"], 0)
    snap["agents"]["b"]["eval_step"] = 20
    assert "@20-40" in progress_line(snap)


def test_one_name_per_concept_and_the_baselines_are_stated():
    text = rendered(render(snapshot(["a"], 0)), 160)
    for header in ("ctx->agent", "circuits up", "circuits in", "pushes refused", "proposals refused"):
        assert header in text
    assert "promot" not in text.replace("proposals", "")  # no bare "promoted"/"promotions" column
    md = to_markdown(summary(["a", "b"], 3))
    assert "summary.md" not in md
    assert "randomly initialised" in md and "not the value of sharing" in md
    assert "against the agent's local levels only" in md and "against the base alone" in md
    assert "randomly initialised" not in to_markdown(summary(["a"], 3, pretrained=True))
    printed = rendered(render_summary(summary(["a"], 3)), 80)
    assert "runs/r/summary.md" in printed and "ctx->agent" in printed and "circuits in" in printed


def test_a_row_of_the_wrong_length_is_named():
    with pytest.raises(ValueError, match=r"row \['x'\] has 1 cells for 2 columns"):
        FitTable("t", ["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="keys=3"):
        FitTable("t", ["a", "b"], [], keys=3)


@pytest.mark.parametrize("height, shows", [(60, "crystallised"), (26, "all columns: swarm status"),
                                           (20, "level servers: foundation v")])
def test_the_live_view_fits_the_terminal_height(height, shows):
    names = ["python/text/json", "python/text/email", "python/net/http", "python/net/urllib"]
    console = Console(width=80, height=height, record=True, file=io.StringIO(), force_terminal=True,
                      color_system=None)
    console.print(LiveView(snapshot(names, 7)))
    text = console.export_text()
    assert shows in text and "…" not in text
    assert len(text.splitlines()) < height or height == 20  # 20 lines: the agents alone do not fit
    assert_whole(text, names)
