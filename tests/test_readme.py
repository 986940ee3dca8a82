"""The README's Quick Start runs as written, at a tiny budget: its code blocks are what a new user copies first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quick start") : text.index("\n## ", text.index("## Quick start") + 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_quick_start_has_code_blocks():
    assert len(quick_start_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(quick_start_blocks())))
def test_a_quick_start_block_runs_as_written(index, tmp_path, monkeypatch):
    # The one change: a budget of one update, where the README trains for minutes.
    code = re.sub(r"total_timesteps=[\d_]+", "total_timesteps=1", quick_start_blocks()[index])
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md Quick start block {index + 1}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize(
    "script", sorted((README.parent / "docs" / "studies").glob("*.sh")), ids=lambda path: path.name
)
def test_a_study_script_parses(script):
    import subprocess

    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
