"""nanotui in a real tmux session: the quick sweep launched by keys on CPU, the table and
the chart seen to update in `capture-pane`, quit (runs untouched), restart, runs still there.

Real processes all the way: the TUI, the background dispatcher, two `engine.train.process` runs on
a tiny prepared text. Skips when tmux is not installed (CI's .ci/run installs it)."""

from __future__ import annotations

import random
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest

from engine.runs import RunDir
from tests.e2e.tmux_driver import Tmux

NAMES = ("n_layer=1", "n_layer=2")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = """\
[defaults]
dataset = "tiny.txt"
tokenizer = "char"
block_size = 32
batch_size = 8
n_layer = 1
n_head = 2
n_embd = 32
max_iters = 1500
lr_decay_iters = 1500
warmup_iters = 10
eval_interval = 250
eval_iters = 5
log_interval = 5
device = "cpu"

[sampling]
prompts = ["The cat"]
max_new_tokens = 40

[launch]
max_cpu_runs = 2

[sweep.quick]
description = "two tiny models"
vary = { n_layer = [1, 2] }
"""


def tiny_text() -> str:
    rng = random.Random(0)
    words = ("the cat sat on a mat and the dog ran to the park where a little girl "
             "played with her red ball").split()
    return "\n".join(" ".join(rng.choice(words) for _ in range(12)).capitalize() + "."
                     for _ in range(1500)) + "\n"


def run_row(screen: str, name: str) -> str | None:
    for line in screen.splitlines():
        if f" {name} " in line and re.search(r"(queued|running|done|failed|stopped)", line):
            return line
    return None


def iter_of(screen: str, name: str) -> int | None:
    row = run_row(screen, name)
    m = re.search(r"(\d+)/1500", row or "")
    return int(m.group(1)) if m else None


def chart_of(screen: str) -> str:
    """The right-hand half of the upper panels: the loss chart."""
    return "\n".join(line[85:] for line in screen.splitlines()[1:27])


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_quick_sweep_by_keys_in_tmux(tmp_path):
    (tmp_path / "tiny.txt").write_text(tiny_text())
    (tmp_path / "experiments.toml").write_text(EXPERIMENTS)
    env = f"NANOTUI_DATA_DIR={shlex.quote(str(tmp_path / 'cache'))} PYTHONPATH={shlex.quote(str(REPO))}"
    tui = (f"cd {shlex.quote(str(tmp_path))} && env -u COLUMNS -u LINES {env} {shlex.quote(sys.executable)} -m tui "
           f"--experiments experiments.toml; echo nanotui-exit-$?; sleep 120")
    tmux = Tmux(f"nanotui-e2e-{tmp_path.name[-12:]}")
    tmux.start(tui)
    try:
        tmux.wait_for(lambda s: "nanotui" in s and "0 runs" in s, 60, "the dashboard")
        tmux.keys("l")
        tmux.wait_for(lambda s: "quick/n_layer=2" in s and "2 runs" in s, 60, "the plan")
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "auto (least-loaded)" in s, 30, "the GPU picker")
        tmux.keys("Enter")

        # The table and the chart update while the runs train.
        seen_iters: set[int] = set()
        charts: set[str] = set()
        deadline = time.monotonic() + 240
        while len(seen_iters) < 2 or len(charts) < 2:
            screen = tmux.screen()
            if "running" in (run_row(screen, "n_layer=2") or ""):
                it = iter_of(screen, "n_layer=2")
                if it:
                    seen_iters.add(it)
            if "train" in chart_of(screen):  # the final chart counts too: it differs
                charts.add(chart_of(screen))
            if all("done" in (run_row(screen, n) or "") for n in ("n_layer=1", "n_layer=2")):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"runs did not progress; the screen:\n{screen}")
            time.sleep(0.3)
        assert len(seen_iters) >= 2, f"the table never moved: {seen_iters}"
        assert len(charts) >= 2, f"the loss chart never changed while running:\n{screen}"

        # Quit while training: the runs keep going (their own processes).
        at_quit = {n: RunDir(tmp_path / "runs" / "quick" / n).read_status() for n in NAMES}
        print("at quit:", {n: (st["state"], st.get("iter")) for n, st in at_quit.items()})
        tmux.keys("q")
        tmux.wait_for(lambda s: "nanotui-exit-0" in s, 30, "nanotui to exit")
        time.sleep(1)
        for n in NAMES:
            st = RunDir(tmp_path / "runs" / "quick" / n).read_status()
            if at_quit[n]["state"] == "running":
                assert st["state"] in ("running", "done"), (n, st)
    finally:
        tmux.kill()

    # Restart: disk is the truth; the app reattaches and follows the runs to the end.
    tmux = Tmux(f"nanotui-e2e2-{tmp_path.name[-12:]}")
    tmux.start(tui)
    try:
        screen = tmux.wait_for(lambda s: "2 runs" in s and run_row(s, "n_layer=2") is not None,
                               60, "the dashboard after a restart")
        for n in NAMES:
            assert re.search(r"(running|done)", run_row(screen, n)), run_row(screen, n)
        final = tmux.wait_for(lambda s: all("done" in (run_row(s, n) or "") for n in NAMES),
                              240, "both runs done")
        assert iter_of(final, "n_layer=1") == 1500 and iter_of(final, "n_layer=2") == 1500
        assert re.search(r"\d\.\d{3}", run_row(final, "n_layer=2") or "")  # a loss is shown

        # A new sample from a real checkpoint, without leaving the app.
        tmux.keys("p")
        tmux.wait_for(lambda s: "Samples" in s and "The cat" in s, 30, "the samples screen")
        tmux.keys("n")
        tmux.wait_for(lambda s: "New sample from" in s, 30, "the sampling dialog")
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "new sample (not saved)" in s, 60, "the generated sample")
        tmux.keys("Escape")
        time.sleep(0.5)
        tmux.keys("c")
        # the table's rows follow its header within a poll (rebuilt to the screen's width)
        tmux.wait_for(lambda s: "Compare" in s and "best val" in s
                      and "n_layer=1" in s and "n_layer=2" in s, 30, "compare with both runs")
        tmux.keys("e")  # the report, written by engine.report.write in a worker
        tmux.wait_for(lambda s: "report written" in s, 90, "the report notification")
        assert (tmp_path / "reports" / "quick" / "report.md").is_file()
        tmux.keys("Escape")
        time.sleep(0.5)
        tmux.keys("q")
        tmux.wait_for(lambda s: "nanotui-exit-0" in s, 30, "nanotui to exit")
    finally:
        tmux.kill()
