"""The hand-in: `nanotui eval`, `bundle`, `verify` (with a real rerun) and `leaderboard`,
through the command line, on one really trained tiny run."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO

from engine.config import TrainConfig
from engine.data.datasets import prepare
from engine.runs import create_run
from tui.cli import main

TEXT = "".join(f"The {w} sat on the mat and looked at the {v}.\n"
               for w in ("cat", "dog", "bird", "fox") for v in ("sun", "moon", "sea")) * 60


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A runs dir with one finished run of 6 iterations (trained by engine.train)."""
    root = tmp_path_factory.mktemp("handin")
    src = root / "story.txt"
    src.write_text(TEXT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NANOTUI_DATA_DIR", str(root / "cache"))
        data = prepare(str(src), "char")
    cfg = TrainConfig(data_dir=str(data), n_layer=1, n_head=2, n_embd=16, block_size=16,
                      batch_size=4, max_iters=6, lr_decay_iters=6, warmup_iters=2,
                      eval_interval=3, eval_iters=2, log_interval=1, device="cpu",
                      dtype="float32", cpu_attention="torch")
    cfg.sampling.max_new_tokens = 8
    run = create_run(root / "runs", "s", "r", cfg)
    env = dict(os.environ, PYTHONPATH=str(REPO), NANOTUI_DATA_DIR=str(root / "cache"),
               OMP_NUM_THREADS="1")
    with open(run.stdout_path, "wb") as log:   # as the launcher redirects it
        subprocess.run([sys.executable, "-m", "engine.train", str(run.path)], env=env, check=True,
                       stdout=log, stderr=subprocess.STDOUT, timeout=600)
    assert run.read_status()["state"] == "done"
    (root / "experiments.toml").write_text("# the tiny test sweep\n")
    return root, data


def cli(root: Path, *argv: str) -> int:
    return main(["--experiments", str(root / "experiments.toml"), "--runs", str(root / "runs"), *argv])


def test_eval_writes_bits_per_byte_beside_the_run_and_into_the_report(world, tmp_path, capsys):
    root, _ = world
    text = tmp_path / "t.txt"
    text.write_text(TEXT[:500])
    assert cli(root, "eval", "s", "--text", str(text), "--block-size", "8", "--json") == 0
    rec = json.loads(capsys.readouterr().out)["evals"][0]
    assert rec["run"] == "s/r" and rec["block_size"] == 8 and rec["tokens"] == 499
    assert rec["bytes"] == 499   # ASCII: one byte per char token, the first is not predicted
    assert rec["bits_per_byte"] == pytest.approx(rec["loss"] / math.log(2))
    assert rec["text_sha256"] == hashlib.sha256(text.read_bytes()).hexdigest()
    lines = (root / "runs/s/r/eval.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["bits_per_byte"] == rec["bits_per_byte"]
    assert cli(root, "report", "s", "--no-plots", "--out", str(tmp_path / "rep")) == 0
    md = (tmp_path / "rep/s/report.md").read_text()
    assert f"bits/byte t.txt ({rec['text_sha256'][:8]}) @ T=8" in md
    assert f"{rec['bits_per_byte']:.3f}" in md


@pytest.mark.parametrize("content", [b"", b"  \n", b"\x7fELF\x02\x01\x00\x00binary"])
def test_eval_refuses_empty_and_binary_text_in_one_line(world, tmp_path, capsys, content):
    root, _ = world
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    before = (root / "runs/s/r/eval.jsonl").read_bytes() if (root / "runs/s/r/eval.jsonl").exists() else b""
    assert cli(root, "eval", "s/r", "--text", str(bad)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("empty" in err or "binary" in err)
    after = (root / "runs/s/r/eval.jsonl").read_bytes() if (root / "runs/s/r/eval.jsonl").exists() else b""
    assert after == before


def _bundle(root: Path, out: Path) -> Path:
    assert cli(root, "bundle", "s", "-o", str(out)) == 0
    return out


def _rewrite(src: Path, dst: Path, edit, rehash: bool) -> None:
    """Copy a bundle, changing its files with edit(dict) and optionally re-hashing the manifest."""
    with tarfile.open(src) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf if m.isreg()}
    edit(files)
    if rehash:
        name = next(k for k in files if k.endswith("/MANIFEST.json"))
        root = name.split("/")[0]
        m = json.loads(files[name])
        m["files"] = {k[len(root) + 1:]: {"sha256": hashlib.sha256(v).hexdigest(), "size": len(v)}
                      for k, v in files.items() if k != name}
        files[name] = json.dumps(m).encode()
    with tarfile.open(dst, "w:gz") as tf:
        for k, v in files.items():
            info = tarfile.TarInfo(k)
            info.size = len(v)
            tf.addfile(info, io.BytesIO(v))


def test_bundle_holds_the_files_and_verifies(world, tmp_path, capsys):
    root, _ = world
    out = _bundle(root, tmp_path / "alice.tar.gz")
    with tarfile.open(out) as tf:
        names = set(tf.getnames())
    for f in ("config.toml", "metrics.jsonl", "samples.jsonl", "status.json", "stdout.log"):
        assert f"alice/runs/s/r/{f}" in names
    assert {"alice/MANIFEST.json", "alice/experiments.toml", "alice/reports/s/report.md"} <= names
    assert any(n.startswith("alice/data/") and n.endswith("/meta.json") for n in names)
    capsys.readouterr()
    assert cli(root, "verify", str(out)) == 0
    assert "ok (1 runs" in capsys.readouterr().out
    assert cli(root, "bundle", "s", "-o", str(out)) == 2   # never overwritten


def test_verify_names_an_edited_metrics_line(world, tmp_path, capsys):
    root, _ = world
    out = _bundle(root, tmp_path / "bob.tar.gz")

    def edit(files):
        k = "bob/runs/s/r/metrics.jsonl"
        lines = files[k].decode().splitlines()
        i = max(j for j, line in enumerate(lines) if '"kind": "eval"' in line)
        rec = json.loads(lines[i])
        rec["val_loss"] -= 0.5
        lines[i] = json.dumps(rec)
        files[k] = ("\n".join(lines) + "\n").encode()
        edit.line = i + 1

    _rewrite(out, tmp_path / "plain.tar.gz", edit, rehash=False)
    capsys.readouterr()
    assert cli(root, "verify", str(tmp_path / "plain.tar.gz")) == 1
    assert "runs/s/r/metrics.jsonl: altered" in capsys.readouterr().out
    _rewrite(out, tmp_path / "rehashed.tar.gz", edit, rehash=True)
    assert cli(root, "verify", str(tmp_path / "rehashed.tar.gz")) == 1
    text = capsys.readouterr().out
    assert f"runs/s/r/metrics.jsonl line {edit.line} gives" in text
    assert "reports/s/runs.csv" in text and "reports/s/report.md" in text


def _tar_with(dst: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(dst, "w:gz") as tf:
        ok = tarfile.TarInfo("x/MANIFEST.json")
        body = json.dumps({"files": {}}).encode()
        ok.size = len(body)
        tf.addfile(ok, io.BytesIO(body))
        member.size = len(data) if member.isreg() else 0
        tf.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return dst


def _sym():
    m = tarfile.TarInfo("x/link")
    m.type, m.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return m


def _dev():
    m = tarfile.TarInfo("x/null")
    m.type = tarfile.CHRTYPE
    return m


@pytest.mark.parametrize("member,why", [
    (tarfile.TarInfo("x/../evil"), "outside"),
    (tarfile.TarInfo("/tmp/evil"), "outside"),
    (tarfile.TarInfo("y/evil"), "outside the archive root"),
    (_sym(), "link"),
    (_dev(), "device"),
])
def test_verify_refuses_unsafe_members_before_extracting(world, tmp_path, capsys, member, why):
    root, _ = world
    bad = _tar_with(tmp_path / "bad.tar.gz", member, b"x" if member.isreg() else b"")
    capsys.readouterr()
    assert cli(root, "verify", str(bad)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err and why in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz"]
    assert not Path("/tmp/evil").exists()


def test_verify_refuses_a_tar_bomb(world, tmp_path, capsys):
    root, _ = world
    bomb = _tar_with(tmp_path / "bomb.tar.gz", tarfile.TarInfo("x/zeros"), bytes(64 * 2**20))
    assert bomb.stat().st_size < 200_000
    capsys.readouterr()
    assert cli(root, "verify", str(bomb)) == 2
    assert "tar bomb" in capsys.readouterr().err


def test_verify_flags_missing_and_extra_files(world, tmp_path, capsys):
    root, _ = world
    out = _bundle(root, tmp_path / "carol.tar.gz")

    def edit(files):
        del files["carol/runs/s/r/stdout.log"]
        files["carol/runs/s/r/notes.txt"] = b"hi"

    _rewrite(out, tmp_path / "moved.tar.gz", edit, rehash=False)
    capsys.readouterr()
    assert cli(root, "verify", str(tmp_path / "moved.tar.gz")) == 1
    text = capsys.readouterr().out
    assert "runs/s/r/stdout.log: missing" in text and "runs/s/r/notes.txt: extra file" in text


def test_leaderboard_markdown_and_csv(world, tmp_path, capsys):
    root, _ = world
    a = _bundle(root, tmp_path / "alice.tar.gz")
    _rewrite(a, tmp_path / "mallory.tar.gz",
             lambda f: f.update({"alice/runs/s/r/stdout.log": b"edited"}), rehash=False)
    capsys.readouterr()
    assert cli(root, "leaderboard", str(a), str(tmp_path / "mallory.tar.gz"),
               "--csv", str(tmp_path / "lb.csv")) == 0
    md = capsys.readouterr().out
    assert "params (nanogpt)" in md and "| alice |" in md and "no (1 problems)" in md
    rows = list(csv.DictReader((tmp_path / "lb.csv").open()))
    assert [r["verified"] for r in rows].count("yes") == 1 and len(rows) == 2
    status = json.loads((root / "runs/s/r/status.json").read_text())
    assert float(rows[0]["best_val_loss"]) == pytest.approx(status["best_val_loss"])
    assert int(rows[0]["params"]) == status["params"] and rows[0]["seed"] == "1337"


def test_rerun_reproduces_the_recorded_losses_exactly(world, tmp_path, capsys):
    root, data = world
    out = _bundle(root, tmp_path / "dave.tar.gz")
    capsys.readouterr()
    assert cli(root, "verify", str(out), "--rerun", "s/r", "--iters", "6", "--data", str(data)) == 0
    text = capsys.readouterr().out
    assert "compared" in text and "exactly (same CPU model)" in text


def test_rerun_without_the_data_says_so(world, tmp_path, capsys):
    root, _ = world
    out = _bundle(root, tmp_path / "erin.tar.gz")
    capsys.readouterr()
    assert cli(root, "verify", str(out), "--rerun", "s/r") == 1
    assert "no prepared data here with source sha256" in capsys.readouterr().out


def test_verify_flags_a_parameter_count_the_config_does_not_give(world, tmp_path, capsys):
    root, _ = world
    out = _bundle(root, tmp_path / "frank.tar.gz")

    def edit(files):
        k = "frank/runs/s/r/status.json"
        st = json.loads(files[k])
        st["params"] = st["params"] * 10
        files[k] = json.dumps(st).encode()

    _rewrite(out, tmp_path / "inflated.tar.gz", edit, rehash=True)
    capsys.readouterr()
    assert cli(root, "verify", str(tmp_path / "inflated.tar.gz"), "--json") == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 1 and "runs/s/r/status.json: params" in problems[0]
