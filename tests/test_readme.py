"""The README opens with exactly two commands; CI runs the second one."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md has no fenced code block"
    before = text[: block.start()]
    assert "```" not in before and len(before.strip().splitlines()) <= 3, "the commands must open the README"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_opens_with_two_commands():
    commands = _commands()
    assert len(commands) == 2, commands
    assert "swarm run" in commands[0] and "pytest" in commands[1]
    assert all(c.startswith("bash infra/setup.sh") for c in commands)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci
