"""`nanotui eval` results in the rendered reports: the sweep's report.md and runs.csv, the
course report (report.md, report.html, runs.csv), the hand-in pages (brief.html) and the
leaderboard, each text named by file name + short sha256 so two texts never share a
column."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from tests.engine.test_handin import TEXT, _rewrite, cli, world  # noqa: F401  (world: a fixture)


def _eval(root: Path, target: str, text: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert cli(root, "eval", target, "--text", str(text), "--block-size", "8", "--json") == 0
    return json.loads(capsys.readouterr().out)["evals"]


@pytest.fixture
def evaluated(world, tmp_path, capsys):  # noqa: F811
    """Two sweeps (s, s2: copies of the trained run) evaluated on two different texts
    that are both called t.txt; sweep s on both."""
    src, _ = world
    root = tmp_path / "w"
    shutil.copytree(src / "runs/s", root / "runs/s")
    shutil.copytree(src / "runs/s", root / "runs/s2")
    (root / "runs/s/r/eval.jsonl").unlink(missing_ok=True)
    (root / "runs/s2/r/eval.jsonl").unlink(missing_ok=True)
    (root / "experiments.toml").write_text("# two copies of the tiny sweep\n")
    a, b = tmp_path / "a/t.txt", tmp_path / "b/t.txt"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_text(TEXT[:400])
    b.write_text(TEXT[400:800].replace("cat", "hen"))
    ra = _eval(root, "s", a, capsys)[0]
    rb = _eval(root, "s", b, capsys)[0]
    r2 = _eval(root, "s2", a, capsys)[0]
    assert ra["text_sha256"] != rb["text_sha256"] and ra["text_sha256"] == r2["text_sha256"]
    return root, ra, rb, r2


def _label(rec: dict) -> str:
    return f"t.txt ({rec['text_sha256'][:8]}) @ T=8"


def _csv_col(rec: dict, what: str) -> str:
    return f"eval_{what}[t.txt {rec['text_sha256'][:8]} T=8]"


def test_sweep_report_names_each_text_and_shows_loss_perplexity_bits_per_byte(evaluated, tmp_path):
    root, ra, rb, _ = evaluated
    assert cli(root, "report", "s", "--no-plots", "--out", str(tmp_path / "rep")) == 0
    md = (tmp_path / "rep/s/report.md").read_text()
    results = md.split("## Results")[1].split("\n\n")[1]
    head = results.splitlines()[0]
    # two files called t.txt are two columns, each named by its sha256
    assert f"bits/byte {_label(ra)}" in head and f"bits/byte {_label(rb)}" in head
    section = md.split("## On a fixed text (`nanotui eval`)")[1].split("\n## ")[0]
    for rec in (ra, rb):
        row = next(line for line in section.splitlines() if _label(rec) in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:3] == ["r", "char"]
        assert cells[-3:] == [f"{rec['loss']:.4f}", f"{rec['perplexity']:.2f}",
                              f"{rec['bits_per_byte']:.3f}"]
    # the sweep's hand-in page (brief.html: its Results table, mean ± sd over seeds)
    assert f"bits/byte {_label(ra)}" in (tmp_path / "rep/s/brief.html").read_text()
    row = next(csv.DictReader((tmp_path / "rep/s/runs.csv").open()))
    for rec in (ra, rb):
        for what in ("loss", "perplexity", "bits_per_byte"):
            assert float(row[_csv_col(rec, what)]) == rec[what]


def test_course_report_and_its_html_carry_the_eval_columns(evaluated, tmp_path):
    root, ra, rb, r2 = evaluated
    assert cli(root, "report", "s", "s2", "--no-plots", "--out", str(tmp_path / "rep")) == 0
    course = next(p for p in (tmp_path / "rep").glob("_course/*") if p.is_dir())
    md = (course / "report.md").read_text()
    head = md.split("## Results")[1].split("\n\n")[1].splitlines()[0]
    assert f"bits/byte {_label(ra)}" in head and f"bits/byte {_label(rb)}" in head
    section = md.split("## On a fixed text (`nanotui eval`)")[1].split("\n## ")[0]
    assert f"{r2['bits_per_byte']:.3f}" in section and "s2/r" in section
    assert f"bits/byte {_label(ra)}" in (course / "report.html").read_text()
    rows = {r["sweep"]: r for r in csv.DictReader((course / "runs.csv").open())}
    assert float(rows["s2"][_csv_col(ra, "bits_per_byte")]) == r2["bits_per_byte"]
    assert rows["s2"][_csv_col(rb, "bits_per_byte")] == ""   # s2 was not evaluated on b


def test_leaderboard_names_the_text_and_gives_its_loss_and_perplexity(evaluated, tmp_path, capsys):
    root, ra, _, r2 = evaluated
    assert cli(root, "bundle", "s", "s2", "-o", str(tmp_path / "carol.tar.gz")) == 0
    capsys.readouterr()
    assert cli(root, "leaderboard", str(tmp_path / "carol.tar.gz"),
               "--csv", str(tmp_path / "lb.csv")) == 0
    md = capsys.readouterr().out
    # a is the text both runs were evaluated on: the leaderboard's column
    assert f"bits/byte {_label(ra)}" in md and f"perplexity {_label(ra)}" in md
    rows = list(csv.DictReader((tmp_path / "lb.csv").open()))
    assert {r["eval_text_sha256"] for r in rows} == {ra["text_sha256"]}
    by_run = {r["run"]: r for r in rows}
    assert float(by_run["s/r"]["eval_loss"]) == ra["loss"]
    assert float(by_run["s2/r"]["bits_per_byte"]) == r2["bits_per_byte"]
    assert by_run["s/r"]["eval_text"] == "t.txt" and by_run["s/r"]["eval_block_size"] == "8"


def test_verify_flags_an_eval_cell_that_its_eval_jsonl_does_not_give(evaluated, tmp_path, capsys):
    root, ra, _, _ = evaluated
    out = tmp_path / "dan.tar.gz"
    assert cli(root, "bundle", "s", "-o", str(out)) == 0
    col = _csv_col(ra, "bits_per_byte")

    def edit(files):
        k = "dan/reports/s/runs.csv"
        rows = list(csv.DictReader(io.StringIO(files[k].decode())))
        rows[0][col] = str(float(rows[0][col]) - 0.5)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        files[k] = buf.getvalue().encode()

    _rewrite(out, tmp_path / "better.tar.gz", edit, rehash=True)
    capsys.readouterr()
    assert cli(root, "verify", str(out)) == 0
    capsys.readouterr()
    assert cli(root, "verify", str(tmp_path / "better.tar.gz")) == 1
    problems = capsys.readouterr().out.strip().splitlines()
    assert len(problems) == 1
    assert problems[0].startswith(f"reports/s/runs.csv: line 2 (s/r) {col} says ")
    assert f"runs/s/r/eval.jsonl line 1 gives {ra['bits_per_byte']}" in problems[0]


def test_a_text_name_cannot_drive_the_terminal_and_a_bad_sha256_is_skipped(evaluated, tmp_path):
    root, ra, _, _ = evaluated
    evals = root / "runs/s/r/eval.jsonl"
    with open(evals, "a") as f:   # as a student's hand-edited file could have them
        f.write(json.dumps({**ra, "text": "/x/\x1b[2J\x1b]0;pwned\x07evil\n.txt",
                            "text_sha256": "e" * 64}) + "\n")
        f.write(json.dumps({**ra, "text": "/x/junk.txt", "text_sha256": "\x1b[31m"}) + "\n")
    assert cli(root, "report", "s", "--no-plots", "--out", str(tmp_path / "rep")) == 0
    md = (tmp_path / "rep/s/report.md").read_text()
    assert "bits/byte evil .txt (eeeeeeee) @ T=8" in md
    assert "\x1b" not in md and "\x07" not in md and "junk.txt" not in md
