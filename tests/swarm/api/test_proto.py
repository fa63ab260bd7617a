"""The committed gRPC stubs are exactly what memory.proto generates (grpcio-tools pinned in dev)."""

from pathlib import Path

from swarm.api.proto.generate import ROOT, generate


def test_committed_stubs_match_the_proto(tmp_path):
    fresh = generate(tmp_path)
    assert [p.name for p in fresh] == ["memory_pb2.py", "memory_pb2.pyi", "memory_pb2_grpc.py"]
    for path in fresh:
        committed = ROOT / "swarm" / "api" / "proto" / path.name
        assert committed.read_text() == Path(path).read_text(), (
            f"{committed} is stale: run `python -m swarm.api.proto.generate` and commit the result")
