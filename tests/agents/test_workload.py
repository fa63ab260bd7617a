import subprocess
import sys

import pytest
import torch

from agents.config import WorkloadConfig
from agents.topology import agent_specs
from agents.workload import Workload

SYN = dict(kind="synthetic", topology={"d": {"s1": ["a", "b"], "s2": ["c"]}}, steps_per_context=3, batch_size=2,
           seq_len=16, eval_windows=4)


def test_topology_to_specs():
    specs = agent_specs(WorkloadConfig(**SYN))
    assert [s.id for s in specs] == ["d/s1/a", "d/s1/b", "d/s2/c"]
    assert [s.id for s in agent_specs(WorkloadConfig())] == ["python/text/json", "python/text/email",
                                                            "python/net/http", "python/net/urllib"]


@pytest.mark.parametrize("kind", ["stdlib", "synthetic"])
def test_contexts_and_boundaries(kind):
    cfg = WorkloadConfig(kind=kind, steps_per_context=3, batch_size=2, seq_len=16, eval_windows=4)
    w = Workload(cfg, agent_specs(cfg)[0])
    flags = [w.next_batch()[1] for _ in range(7)]
    assert flags == [True, False, False, True, False, False, True]
    batch, _ = w.next_batch()
    assert batch.ids.shape == (2, 17) and batch.ids.dtype == torch.int64 and batch.target_bytes.shape == (2, 16)
    assert w.held_out.ids.shape[1] == 17 and 1 <= len(w.held_out) <= 4


def test_streams_are_deterministic_across_processes():
    cfg = WorkloadConfig(**SYN)
    here = Workload(cfg, agent_specs(cfg)[1]).next_batch()[0].ids.sum().item()
    code = ("from agents.config import WorkloadConfig; from agents.topology import agent_specs;"
            "from agents.workload import Workload;"
            f"cfg = WorkloadConfig(**{SYN!r});"
            "print(Workload(cfg, agent_specs(cfg)[1]).next_batch()[0].ids.sum().item())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(other) == here


@pytest.mark.parametrize("kwargs, message", [({"kind": "web"}, "workload.kind"),
                                             ({"topology": {"d": {"s": ["a", "a"]}}}, "appears twice"),
                                             ({"topology": {"d": {}}}, "no agents"),
                                             ({"held_out_every": 1}, "workload.held_out_every")])
def test_bad_workload_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WorkloadConfig(**kwargs)
