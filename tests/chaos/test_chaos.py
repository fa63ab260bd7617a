"""A short seeded chaos schedule (CI): agents, team and domain servers and the whole driver killed at
random moments, and at the nastiest ones (between journal write and ack, mid-checkpoint, mid-forward);
the invariants are checked from the stores alone (tests/chaos/harness.py). The long run: bench/chaos.py."""

import pytest

from tests.chaos.harness import KINDS, chaos


@pytest.mark.parametrize("seed", [0, 1])
def test_chaos_schedule_leaves_every_push_applied_exactly_once(tmp_path, seed):
    report = chaos(tmp_path, seed=seed, ticks=60, kill_rate=0.3)
    assert report.violations == []
    assert sum(report.kills.values()) >= 10 and report.acked > 20 and report.checked >= report.acked
    assert set(report.kills) >= {"agent", "team"}


def test_chaos_with_the_level_stores_on_s3(tmp_path):
    """The same schedule with every level server's journal and checkpoints on a real S3-compatible server
    (moto on loopback): no rename there, so commits and repairs take the object-store path."""
    from tests.cluster.s3_server import s3_server, s3_url

    with s3_server():
        report = chaos(tmp_path, seed=2, ticks=60, kill_rate=0.4, levels=s3_url("chaos"))
    assert report.violations == []
    assert set(report.kills) == set(KINDS) and report.acked > 50 and report.checked >= report.acked


def test_the_checks_catch_a_push_applied_twice(tmp_path):
    """The harness is not vacuous: a push journaled twice at a team (a broken server) is found."""
    from cluster.level.records import PushRecord
    from cluster.store import LevelStore
    from tests.chaos.harness import Report, Swarm, check

    swarm = Swarm(tmp_path)
    swarm.run(10, seed=3, kill_rate=0.0)
    store = LevelStore(swarm.store_dir("swarm/t0"), config_hash="")
    t, meta = PushRecord("a00", 99, 0, {m: 0 * v for m, v in swarm.teams["swarm/t0"].core.B.items()}, 1, 2).to_journal()
    store.append(t, meta)
    report = check(swarm, Report(3))
    assert any("overlap" in v for v in report.violations)
    assert KINDS
