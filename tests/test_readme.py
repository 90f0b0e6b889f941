"""The README's two top commands stay what CI runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = ROOT.joinpath("README.md").read_text().split("```bash\n", 1)[1]
    commands = readme.split("```", 1)[0].strip().splitlines()
    assert len(commands) == 2
    assert commands[0].endswith("smpq-onnx search")
    assert commands[1] in ROOT.joinpath(".ci", "run").read_text().splitlines()


def test_the_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = ROOT.joinpath("README.md").read_text()
    section = text.split("## Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Python API)", "exec"), {"__name__": "readme_example"})
    assert os.path.exists(tmp_path / "smpq_api_out" / "again.qdq.onnx")
