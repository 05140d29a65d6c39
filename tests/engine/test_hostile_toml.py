"""Small hostile TOML files (experiments.toml, a run's config.toml) are refused in one
line, fast and in bounded memory: size and nesting are checked before parsing."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import ConfigError, load_toml

REPO = Path(__file__).resolve().parents[2]


def plan(path: Path) -> subprocess.CompletedProcess:
    """`nanotui plan` on `path` in a child capped at 1 GB of address space."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    return subprocess.run([sys.executable, "-m", "tui", "plan", "--experiments", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          preexec_fn=cap)


HOSTILE = {
    "nested arrays": ("[sweep.a]\nvary.seed = " + "[" * 3000 + "]" * 3000 + "\n",
                      "nested over 16 deep"),
    "a 30,000-part dotted key": ("[sweep.a]\n" + ".".join(["k"] * 30000) + " = 1\n",
                                 "dotted key of 30,000 parts"),
    "20,000 sweeps": ("".join(f"[sweep.s{i}]\nvary.seed = [1]\n" for i in range(20000)),
                      "more than 1000 sweeps"),
    "a 2 MB file": ("# pad\n" * 400_000, "over the 1,048,576 this file may have"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_experiments_files_are_refused_in_one_line_fast(tmp_path, case):
    text, why = HOSTILE[case]
    (tmp_path / "experiments.toml").write_text(text)
    t0 = time.monotonic()
    p = plan(tmp_path / "experiments.toml")
    took = time.monotonic() - t0
    assert p.returncode == 2, p.stderr[-500:]
    assert p.stderr.count("\n") == 1 and why in p.stderr and "Traceback" not in p.stderr
    assert took < 30


def test_a_run_config_nested_too_deep_is_one_config_error(tmp_path):
    (tmp_path / "config.toml").write_text("x = " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(ConfigError, match="refused: arrays or tables nested"):
        load_toml(tmp_path / "config.toml")
    (tmp_path / "config.toml").write_text('n_layer = 2\ndescription = "[[[[[[[[[[[[[[[[[[[["\n'
                                          "lr = [1.5, 2.5]\n# a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q\n")
    assert load_toml(tmp_path / "config.toml")["n_layer"] == 2  # strings, comments: not counted
