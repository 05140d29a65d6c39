"""`nanotui init` and `nanotui --version`: a project started outside the repository gets
the course's experiments.toml. (That the shipped template equals the repository's
experiments.toml is checked by .ci/run on a clean clone, not here: a student edits
their working copy, and `make test` must still pass.)"""

from __future__ import annotations

import pytest

from engine.version import nanotui_version
from tui.cli import main as nanotui
from tui.commands.init import template_bytes


def test_init_writes_it_and_plan_reads_it(tmp_path, capsys):
    assert nanotui(["init", str(tmp_path / "course")]) == 0
    written = tmp_path / "course" / "experiments.toml"
    assert written.read_bytes() == template_bytes()
    assert "with the sweeps depth, width, heads, quick" in capsys.readouterr().out
    assert nanotui(["--experiments", str(written), "plan", "depth", "width", "heads"]) == 0
    out = capsys.readouterr().out
    assert "depth/n_layer=12" in out and "heads/n_head=32" in out
    assert "11 runs (+ 1 shared, trained once)" in out  # heads/n_head=8 is width/n_embd=256


def test_init_never_overwrites(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments.toml").write_text("[defaults]\n# mine\n")
    assert nanotui(["init"]) == 2
    err = capsys.readouterr().err
    assert err == ("nanotui: error: experiments.toml already exists: not overwritten "
                   "(edit it, remove it, or pick another DIR)\n")
    assert (tmp_path / "experiments.toml").read_text() == "[defaults]\n# mine\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        nanotui(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"nanotui {nanotui_version()}\n"
    assert nanotui_version()[0].isdigit()
