"""The README's examples run as written: the fine-tuning section's commands and Python, in a fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def section_blocks(title: str, language: str) -> list[str]:
    """The code blocks of one language in the README section with this title (up to the next section)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", text[start:end], flags=re.S)


def test_the_fine_tuning_examples_run_as_written(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    (tmp_path / "tests" / "fixtures").symlink_to(ROOT / "tests" / "fixtures")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "MOIRAI_NUM_THREADS": "1"}
    commands = section_blocks("Fine-tuning", "bash")
    assert len(commands) == 1 and "moirai finetune" in commands[0]
    script = commands[0].replace("moirai ", f"{sys.executable} -m moirai_cli.cli ")
    result = subprocess.run(["bash", "-ec", script], cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "fine-tuned Moirai-MoE for" in result.stderr and (tmp_path / "forecast.csv").exists()
    assert "Leaderboard" in result.stdout and "employment-moe" in result.stdout
    for folder in (tmp_path / "employment-moe",):
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    python = section_blocks("Fine-tuning", "python")
    assert len(python) == 1
    subprocess.run(["rm", "-rf", str(tmp_path / "employment-moe")], check=True)  # the Python example writes it anew
    result = subprocess.run([sys.executable, "-c", python[0]], cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "fine-tuned Moirai-MoE for" in result.stdout
