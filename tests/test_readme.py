"""The README's two top commands stay what CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = ROOT.joinpath("README.md").read_text().split("```bash\n", 1)[1]
    commands = readme.split("```", 1)[0].strip().splitlines()
    assert len(commands) == 2
    assert commands[0].endswith("smpq-onnx search")
    assert commands[1] in ROOT.joinpath(".ci", "run").read_text().splitlines()
