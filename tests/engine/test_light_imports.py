"""Views that only read runs (status, plan, report tables) never import torch: importing it
costs ~2.5 s, more than `nanotui status` may take on a run of a million logged steps."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["tui.commands.status", "engine.launch.queue",
                                    "engine.report.summary", "engine.launch.placement"])
def test_reading_views_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"{module} imports torch"
