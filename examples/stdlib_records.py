"""Write a JSONL file and a Parquet dataset of real text, to try `workload=jsonl` and `workload=dataset`.

    python examples/stdlib_records.py                 # -> runs/example_data/{records.jsonl, records/}
    swarm run workload=jsonl workload.paths=[runs/example_data/records.jsonl] workload.topology=null
    swarm run workload=dataset workload.path=runs/example_data/records workload.partition_field=agent \
        workload.team_field=team workload.topology=null

A record is one top-level function or class of a standard-library module, with the module's
package as its ``agent`` and a team per group of packages (the same groups as the default
stdlib workload): the shape of "a JSONL of my users' conversations", with text that ships with
Python. Nothing is downloaded. See docs/data.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.sources import package_files  # noqa: E402

TEAMS = {"text": ["json", "email"], "net": ["http", "urllib"]}


def records(min_chars: int = 200) -> list[dict]:
    """One record per top-level def/class of at least ``min_chars`` characters, in file order."""
    out = []
    for team, packages in TEAMS.items():
        for package in packages:
            for path in package_files(package):
                source = path.read_text(encoding="utf-8")
                for node in ast.parse(source).body:
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                        text = ast.get_source_segment(source, node) or ""
                        if len(text) >= min_chars:
                            out.append({"agent": package, "team": team, "source": f"{path.name}:{node.lineno}",
                                        "text": text})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/example_data"))
    args = parser.parse_args()
    rows = records()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "records.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (args.out / "records").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), args.out / "records" / "part-0.parquet")
    per_agent = {a: sum(r["agent"] == a for r in rows) for a in sorted({r["agent"] for r in rows})}
    print(f"{len(rows)} records {per_agent} -> {args.out / 'records.jsonl'} and {args.out / 'records'}/")


if __name__ == "__main__":
    main()
