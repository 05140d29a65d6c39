"""`nanotui prepare`: JSON output, one-line errors with exit 2, earlier data untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tui.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*argv: str):
    """The real console entry point in a child: exit code, stdout, stderr."""
    p = subprocess.run([sys.executable, "-m", "tui", *argv], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_json_output_and_reuse(shared_data, capsys, tmp_path):
    src = str(shared_data / "shakespeare" / "input.txt")
    assert main(["prepare", src, "--json", "--data-dir", str(tmp_path / "sh")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data_dir"] == str(tmp_path / "sh")
    assert (doc["vocab_size"], doc["train_tokens"], doc["val_tokens"]) == (65, 1_003_854, 111_540)
    assert main(["prepare", str(tmp_path / "sh"), "--json"]) == 0  # a prepared dir as source
    assert json.loads(capsys.readouterr().out)["train_tokens"] == 1_003_854


def test_gpt2_with_tokenizer_file_and_human_output(shared_data, capsys):
    src = str(shared_data / "shakespeare" / "input.txt")
    code = main(["prepare", src, "--tokenizer", "gpt2", "--val-fraction", "0.1",
                 "--tokenizer-file", str(shared_data / "gpt2" / "vocab.bpe"),
                 "--tokenizer-file", str(shared_data / "gpt2" / "encoder.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "train 301,966 tokens  val 36,059 tokens" in out and "vocab 50,257" in out


def test_small_file_warns(tmp_path, capsys):
    (tmp_path / "s.txt").write_text("hello world\n" * 20)
    assert main(["prepare", str(tmp_path / "s.txt")]) == 0
    err = capsys.readouterr().err
    assert "warning: the val split has only 24 tokens" in err


@pytest.mark.parametrize("case", ["missing", "binary-dir", "empty", "tokenizer", "unwritable",
                                  "binary-file", "fraction"])
def test_bad_input_is_one_line_exit_2_no_traceback(case, shared_data, tmp_path):
    good = str(shared_data / "shakespeare" / "input.txt")
    out = tmp_path / "prepared"
    code, _, _ = run_cli("prepare", good, "--data-dir", str(out))
    assert code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "blob").write_bytes(bytes(range(256)))
    (tmp_path / "blob.txt").write_bytes(bytes(range(128, 256)))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "afile").write_text("x")
    argv = {
        "missing": ["prepare", str(tmp_path / "nope.txt"), "--data-dir", str(out)],
        "binary-dir": ["prepare", str(tmp_path / "bin"), "--data-dir", str(out)],
        "empty": ["prepare", str(tmp_path / "empty.txt"), "--data-dir", str(out)],
        "tokenizer": ["prepare", good, "--tokenizer", "wordpiece", "--data-dir", str(out)],
        "unwritable": ["prepare", good, "--data-dir", str(tmp_path / "afile" / "x")],
        "binary-file": ["prepare", str(tmp_path / "blob.txt"), "--data-dir", str(out)],
        "fraction": ["prepare", good, "--val-fraction", "0", "--data-dir", str(out)],
    }[case]
    code, stdout, stderr = run_cli(*argv)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanotui: error: "), stderr
    assert "Traceback" not in stderr and stdout == ""
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
