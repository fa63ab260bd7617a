"""The headroom check and the fraction of headroom captured: exact arithmetic on hand-made numbers."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.experiment import headroom
from swarm.experiment.headroom import check, fractions, mean_ci, paired, per_seed, t_quantile


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantiles_match_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


def test_the_t_interval_of_known_values():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: 2 +- 4.3027 / sqrt(3)
    assert m == 2.0 and (hi - m) == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5) and lo == pytest.approx(2 * m - hi)
    m, lo, hi = mean_ci([0.5])
    assert m == 0.5 and math.isnan(lo) and math.isnan(hi)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=8), st.floats(-3, 3))
def test_the_interval_moves_with_a_shift_and_contains_the_mean(xs, shift):
    m, lo, hi = mean_ci(xs)
    m2, lo2, hi2 = mean_ci([x + shift for x in xs])
    assert lo <= m <= hi and m2 == pytest.approx(m + shift, abs=1e-9)
    assert hi2 - lo2 == pytest.approx(hi - lo, abs=1e-6)


def test_fractions_are_paired_by_seed():
    iso = {0: 3.0, 1: 3.2, 2: 3.1}
    oracle = {0: 2.0, 1: 2.7, 2: 3.1}  # seed 2: no headroom
    arm = {0: 2.5, 1: 3.3, 3: 1.0}  # seed 3 has no isolated run
    got = fractions(iso, arm, oracle)
    assert got[:2] == [pytest.approx(0.5), pytest.approx(-0.2)] and len(got) == 2
    assert fractions(iso, {2: 3.0}, oracle) == [pytest.approx(math.nan, nan_ok=True)]
    assert paired({0: 1.0, 1: 2.0}, {1: 0.5, 2: 9.0}) == [1.5]


def test_the_check_needs_strength_and_order():
    ok = check([0.30, 0.32, 0.31], [0.20, 0.21, 0.19], [0.10, 0.12, 0.11])
    assert ok["qualifies"] and ok["strong"] and ok["ordered"] and ok["team"][0] == pytest.approx(0.31)
    assert ok["team"][1] == pytest.approx(0.01)
    weak = check([0.05, 0.15, 0.10], [0.01, 0.02, 0.0], [0.0, 0.0, 0.0])  # mean 0.10 < 5 x 0.05
    assert not weak["strong"] and weak["ordered"] and not weak["qualifies"]
    assert check([0.05, 0.15, 0.10], [0.01, 0.02, 0.0], [0.0, 0.0, 0.0], factor=2.0)["qualifies"]
    unordered = check([0.30, 0.31], [0.32, 0.33], [0.1, 0.1])
    assert unordered["strong"] and not unordered["ordered"] and not unordered["qualifies"]
    one = check([0.3], [0.2], [0.1])
    assert one["strong"] is None and not one["qualifies"]


def _job(arm, seed, agents):
    return {"arm": arm, "seed": seed, "team": {"agents": agents}}


def test_the_section_prints_the_check_first_and_each_arms_fraction():
    def rec(own, team, domain, other):
        return {"own": own, "team": team, "domain": domain, "other_domains": other}

    values = {"isolated": (3.0, 3.5, 3.6, 4.0), "oracle_team": (3.0, 3.0, 3.5, 4.0),
              "oracle_domain": (3.1, 3.2, 3.2, 4.0), "oracle_all": (3.2, 3.4, 3.4, 3.5),
              "full": (2.9, 3.25, 3.6, 4.0)}
    jobs = {arm: [_job(arm, s, {"a": rec(*(v + 0.01 * s for v in vals)), "b": rec(*vals)}) for s in (0, 1, 2)]
            for arm, vals in values.items()}
    assert per_seed(jobs["full"], "team")[2] == pytest.approx(3.26)  # mean over agents a, b
    lines = headroom.section(jobs, 5.0)
    text = "\n".join(lines)
    assert lines[0] == "## Headroom check" and "| team | +0.5000 | 0.0000 |" in text
    assert "| domain | +0.3000 |" in text and "| all agents | +0.1000 |" in text and "qualifies: yes" in text
    # full: (3.5 - 3.25) / (3.5 - 3.0) = 0.5 on teammates' files, every seed alike (zero-width interval)
    row = [line for line in lines if line.startswith("| full |")][-1]  # the fractions table comes second
    assert "0.500 [0.500, 0.500]" in row and "-0.1000 [-0.1000, -0.1000]" in row
    assert headroom.section({k: v for k, v in jobs.items() if k != "oracle_all"}, 5.0) == []


def _rec(own, team, domain, other):
    return {"own": own, "team": team, "domain": domain, "other_domains": other}


def test_the_targets_judge_capture_own_files_and_the_flat_arms_by_paired_standard_errors():
    values = {"isolated": (3.0, 3.5, 3.6, 4.0), "oracle_team": (3.0, 3.0, 3.5, 4.0),
              "full": (3.0, 3.15, 3.4, 4.0), "fedavg": (3.0, 3.3, 3.5, 4.0), "flower_fedavg": (3.0, 3.1, 3.3, 4.0)}
    noise = {0: 0.0, 1: 0.004, 2: -0.003}  # a little seed noise so standard errors are finite
    jobs = {arm: [_job(arm, s, {"a": _rec(*(v + noise[s] * (i + 1) for v in vals))})
                  for s in (0, 1, 2)] for i, (arm, vals) in enumerate(values.items())}
    rows = {r[0].split(" (")[0].split(",")[0]: r for r in headroom.targets(jobs)}
    capture = rows["full captures >= 60% of team headroom on teammates' files"]
    assert capture[2] == "yes" and capture[1].startswith("captured 0.69")  # ~(3.5 - 3.15) / 0.5 = 0.7 (noise)
    assert rows["full beats fedavg on teammates' and domain-mates' files by > 2 s.e."][2] == "yes"
    assert rows["full beats flower_fedavg on teammates' and domain-mates' files by > 2 s.e."][2] == "**no**"
    worse_own = {**jobs, "full": [_job("full", s, {"a": _rec(3.2, 3.15, 3.4, 4.0)}) for s in (0, 1, 2)]}
    assert headroom.targets(worse_own)[0][2] == "**no**"  # captured, but own files worse than isolated
    assert headroom.targets({"full": jobs["full"]}) == []
