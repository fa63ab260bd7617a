"""The ``code`` workload: installed source code as languages -> projects -> parts, split deterministically."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.config import WorkloadConfig
from agents.sources import check_workload, documents_for, stdlib_documents, topology_of
from agents.sources.code import DEFAULT_TOPOLOGY, MIN_BYTES, code_files, site_packages
from agents.sources.document import WorkloadError
from agents.topology import AgentSpec, agent_specs


def _cfg(**kw) -> WorkloadConfig:
    return WorkloadConfig(kind="code", **kw)


def test_the_default_topology_is_languages_projects_parts():
    topo = topology_of(_cfg())
    assert topo == DEFAULT_TOPOLOGY and set(topo) == {"python", "cpp"}
    assert all(len(teams) >= 2 and all(len(a) >= 2 for a in teams.values()) for teams in topo.values())
    specs = agent_specs(_cfg(topology=topo))
    assert "cpp/aten/ATen.native" in [s.id for s in specs] and len(specs) == 8


def test_every_agent_has_disjoint_deterministic_train_and_held_out_files_of_its_language():
    cfg = _cfg(topology=DEFAULT_TOPOLOGY)
    seen: dict = {}
    for spec in agent_specs(cfg):
        docs = documents_for(cfg, spec)
        again = documents_for(cfg, spec)
        train, held = docs.train.paths, docs.held_out.paths
        assert train == again.train.paths and held == again.held_out.paths  # deterministic
        assert not set(train) & set(held) and len(held) >= 4 and len(train) >= 4 * len(held) - 4
        suffix = (".py",) if spec.domain == "python" else (".h", ".hpp", ".cuh")
        for p in train + held:
            assert p.suffix in suffix and p.stat().st_size >= MIN_BYTES
            assert not {"test", "tests", "testing"} & set(p.relative_to(site_packages()).parts)
            assert seen.setdefault(p, spec.id) == spec.id  # no file in two agents
        assert sum(p.stat().st_size for p in held) > 40_000  # enough text for 256 spread windows


def test_no_workload_file_is_in_the_pretraining_corpus():
    from swarm.config.pretrain import PretrainConfig

    pre = stdlib_documents(PretrainConfig().packages)
    corpus = [p for part in (pre.train, pre.held_out) for p in part.paths]
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in corpus}
    for domain, teams in DEFAULT_TOPOLOGY.items():
        for agents in teams.values():
            for agent in agents:
                for p in code_files(domain, agent):
                    assert site_packages() in p.parents and p not in corpus
                    assert hashlib.sha256(p.read_bytes()).hexdigest() not in digests


def test_a_missing_package_is_refused_by_name():
    cfg = _cfg(topology={"python": {"sci": ["numba.core", "sympy.core"]}})
    with pytest.raises(WorkloadError, match=r"agent 'numba.core' \(domain python\): no directory .*numba/core; "
                                            r"is the package installed"):
        check_workload(cfg)
    with pytest.raises(WorkloadError, match="numba.core"):
        documents_for(cfg, AgentSpec("numba.core", "sci", "python"))


def test_an_agent_outside_the_topology_reads_its_teams_language():
    """A joiner (swarm agents add, the experiment's join and switch) is not in the topology: its spec's
    domain says which language's files it reads; a domain that is no language is refused by name."""
    cfg = _cfg(topology=DEFAULT_TOPOLOGY)
    docs = documents_for(cfg, AgentSpec("sympy.solvers", "sympy", "python"))
    assert docs.train.paths and all(p.suffix == ".py" and "solvers" in p.parts for p in docs.train.paths)
    header = documents_for(cfg, AgentSpec("ATen.cpu", "aten", "cpp")).held_out.paths
    assert header and all(p.suffix in (".h", ".hpp", ".cuh") for p in header)
    with pytest.raises(WorkloadError, match="domain 'java' is not a language of the code kind"):
        documents_for(cfg, AgentSpec("sympy.solvers", "sympy", "java"))


@pytest.mark.parametrize("topology, message", [
    ({"java": {"spring": ["spring.core"]}}, "domain 'java' is not a language of the code kind"),
    ({"python": {"s": ["sympy..core"]}}, "'sympy..core' .* is not a dotted path"),
    ({"python": {"s": ["sympy.polys"], "t": ["sympy"]}}, "agents 'sympy.polys' .* and 'sympy' .* overlap"),
])
def test_bad_topologies_are_refused_with_the_field(topology, message):
    with pytest.raises(WorkloadError, match=message):
        topology_of(_cfg(topology=topology))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "sub/", "tests/", "deep/er/", ".hidden/"]),
                          st.sampled_from([".py", ".h", ".txt"]), st.integers(1, 3 * MIN_BYTES)),
                min_size=1, max_size=12))
def test_code_files_walks_one_language_without_tests_or_small_files(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("site")
    expected = set()
    for i, (folder, suffix, size) in enumerate(files):
        path = root / "proj" / "part" / f"{folder}f{i}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x" * size)
        if suffix == ".py" and size >= MIN_BYTES and folder not in ("tests/", ".hidden/"):
            expected.add(path)
    if not expected:
        with pytest.raises(WorkloadError, match="holds no .py file"):
            code_files("python", "proj.part", root)
        return
    found = code_files("python", "proj.part", root)
    assert found == sorted(expected)
