from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Two commands") :]
    block = block[block.index("```bash") + 7 :]
    block = block[: block.index("```")]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    commands = _commands()
    assert len(commands) == 2
    install_and_demo, tests = commands
    assert "tuner run search_spaces/digits_mlp.yaml" in install_and_demo
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci


def test_readme_commands_install_pinned_torch() -> None:
    for command in _commands():
        assert "-c .ci/constraints.txt" in command
    pins = (ROOT / ".ci" / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", pins, re.M)
