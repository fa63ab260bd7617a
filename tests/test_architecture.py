"""The architecture holds: layering and no cycles (import-linter), light CLI paths, documented contracts,
every package installed."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "ray")


def test_imports_only_go_down_and_siblings_have_no_cycles():
    linter = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


@pytest.mark.parametrize("argv", [["--help"], ["status", "--help"], ["query", "--help"], ["serve", "--help"]])
def test_help_loads_neither_torch_nor_transformers_nor_ray(argv):
    """`swarm --help` and the light commands' help start without the heavy libraries (bench/cli_start.py
    measures the time; this checks the cause). Not `swarm experiment --help`: it counts the plans' jobs."""
    code = (f"import sys\nfrom swarm.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n"
            f"    pass\nprint('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "usage: swarm" in out.stdout
    assert out.stderr.strip().splitlines()[-1] == "LOADED=", f"swarm {' '.join(argv)} loaded {out.stderr!r}"


def test_status_of_a_run_loads_neither_torch_nor_ray(tmp_path):
    """`swarm status RUN_DIR` renders a real snapshot without the heavy libraries."""
    from swarm.rundir import RunDir

    RunDir(tmp_path).write_status({"run_dir": str(tmp_path), "started": 0.0, "updated": 1.0, "state": "finished",
                                   "steps": 10, "agents": {}, "servers": {}, "start_steps": {}})
    code = (f"import sys\nfrom swarm.cli import main\nmain(['status', {str(tmp_path)!r}])\n"
            f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "finished" in out.stdout
    assert out.stderr.strip().splitlines()[-1] == "LOADED=", out.stderr


def test_config_schemas_load_without_torch():
    code = "import sys, swarm.config.schema; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _undocumented(root: Path) -> list[str]:
    missing = []
    for path in sorted(root.rglob("*.py")):
        if "_pb2" in path.name:
            continue
        def visit(node, prefix, path=path):
            for n in ast.iter_child_nodes(node):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith("_"):
                    if ast.get_docstring(n) is None:
                        missing.append(f"{path.relative_to(ROOT)}:{n.lineno} {prefix}{n.name}")
                    if isinstance(n, ast.ClassDef):
                        visit(n, f"{prefix}{n.name}.", path)
        visit(ast.parse(path.read_text()), "")
    return missing


@pytest.mark.parametrize("package", ["cluster", "swarm/api"])
def test_every_public_definition_states_its_contract(package):
    assert _undocumented(ROOT / package) == []


def test_every_package_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {str(p.parent.relative_to(ROOT)).replace("/", ".") for top in ("layers", "agents", "cluster", "swarm")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_no_bench_script_shadows_a_module():
    """`python bench/X.py` puts bench/ first on sys.path: a script named like a module that Ray or the
    code imports (grpc, ray, torch, ...) replaces it in that process."""
    import importlib.util

    clashes = [p.name for p in (ROOT / "bench").glob("*.py") if importlib.util.find_spec(p.stem) is not None]
    assert clashes == []
