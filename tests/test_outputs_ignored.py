"""What the README's commands write into the project (reports, an exported model, the
demo, runs) is ignored by git, so a student's `git status` shows their own changes only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="not a git checkout")
def test_command_outputs_are_git_ignored():
    outputs = ["reports/depth/report.md", "reports/_course/depth+width/report.html",
               "hf-model/config.json", "hf-model-depth/model.safetensors",
               "nanotui-demo/experiments.toml", "runs/depth/n_layer=2/ckpt.pt"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *outputs], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.stdout.split() == outputs
