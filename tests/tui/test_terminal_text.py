"""Text a user or a model wrote reaches the terminal without control sequences: sweep
descriptions, samples, error reasons (in status.json too), one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.errors import UserError, one_line
from engine.runs import RunDir
from tests.tui.conftest import build_runs

REPO = Path(__file__).resolve().parents[2]  # tests/tui/ -> the checkout
HOSTILE = "a\x1b]2;PWNED\x07b\x1b]52;c;cHduZWQ=\x07c\x1b[?1049h\x1b[2Jd\x9b31me\x07\x00\r"


def test_safe_text_removes_sequences_whole_and_keeps_newlines_tabs_and_unicode():
    from engine.text import safe_text
    assert safe_text(HOSTILE) == "abcde"
    assert safe_text("line 1\n\tline 2 · café 日本 😀") == "line 1\n\tline 2 · café 日本 😀"
    assert safe_text("\x1bP1$r\x1b\\x\x1b_apc\x1b\\y\x1b7z") == "xyz"


def test_one_line_errors_carry_no_escape_bytes():
    assert one_line(UserError(f"bad {HOSTILE}")) == "bad abcde"
    assert "\x1b" not in one_line(RuntimeError("CUDA error: \x1b[31mout of memory\x1b[0m"))


def test_status_reasons_are_stored_and_shown_without_escapes(tmp_path):
    runs = build_runs(tmp_path / "runs")
    run: RunDir = runs["width/n_embd=32"]
    run.update_status(reason=f"RuntimeError: {HOSTILE}")
    assert "\x1b" not in run.status_path.read_text(encoding="utf-8").encode().decode(
        "unicode_escape")
    st = json.loads(run.status_path.read_text())
    st["reason"] = HOSTILE  # a status.json written by hand or by another version
    run.status_path.write_text(json.dumps(st))
    p = subprocess.run([sys.executable, "-m", "tui", "status", "--runs", str(tmp_path / "runs")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-500:]
    assert "abcde" in p.stdout
    assert not any(c in p.stdout for c in "\x1b\x07\x9b\x00\r")


def test_sweep_descriptions_and_samples_shown_by_the_tui_have_no_escapes(tmp_path):
    from tui.services import EngineLauncher
    from tui.widgets.samples_view import render_sample
    exp = tmp_path / "experiments.toml"
    exp.write_text('[sweep.depth]\ndescription = "deep ' + HOSTILE.replace("\x00", "").encode(
        "unicode_escape").decode().replace("\\x", "\\u00") + '"\nvary.n_layer = [1, 2]\n')
    (info,) = EngineLauncher(tmp_path / "runs", exp).sweeps()
    assert info.description == "deep abcde"
    shown = render_sample({"iter": 100, "prompt": "Once\x1b]2;X\x07", "text": f"Once {HOSTILE}",
                           "metrics": None}).plain
    assert "Once" in shown and "abcde" in shown
    assert not any(c in shown for c in "\x1b\x07\x9b\x00\r")
