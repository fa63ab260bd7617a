"""Regenerate the committed gRPC stubs from memory.proto: ``python -m swarm.api.proto.generate [OUT_DIR]``."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def generate(out_dir: Path = ROOT) -> list[Path]:
    """Write ``swarm/api/proto/memory_pb2{,_grpc}.py(i)`` under ``out_dir``; returns their paths."""
    from grpc_tools import protoc

    (out_dir / "swarm" / "api" / "proto").mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{ROOT}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
            str(ROOT / "swarm" / "api" / "proto" / "memory.proto")]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on swarm/api/proto/memory.proto")
    return sorted((out_dir / "swarm" / "api" / "proto").glob("memory_pb2*"))


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT):
        print(path)
