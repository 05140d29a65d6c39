"""The hand-in: brief.html beside the course report, printed by a real browser to at
most 4 A4 pages (the full report runs longer), with methods, one results table, three
figures and the temperature table, and no local paths."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from engine.report.write import write_report
from engine.runs import RunDir
from tests.engine.test_report_course import STORY, course_runs

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("brief")
    course_runs(tmp / "runs")
    for sweep in ("depth", "width", "heads"):
        for d in sorted((tmp / "runs" / sweep).iterdir()):
            if d.is_symlink():
                continue
            for t in (0.5, 0.8, 1.2):  # a temperature study (nanotui sample --temperature)
                RunDir(d).log_temperature_sample(
                    iter=300, prompt="Once upon a time", temperature=t, top_k=200, top_p=None,
                    seed=1, text="Once upon a time" + STORY * 4, completion=STORY * 4, metrics={})
    res = write_report(tmp / "runs", ["depth", "width", "heads"], tmp / "out")
    return tmp, res.course


def test_brief_has_methods_one_results_table_three_figures_and_temperatures(course):
    tmp, c = course
    md = (c.dir / "brief.md").read_text()
    assert [h for h in re.findall(r"^## (.+)$", md, re.M)] == [
        "Methods", "Results", "Figures", "Temperature study"]
    assert len(re.findall(r"^\| sweep \| configuration \|", md, re.M)) == 1  # one results table
    figs = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", md)
    assert figs == ["depth_vs_params.png", "width_vs_params.png", "heads_vs_n_head.png"]
    page = c.brief_html.read_text()
    assert page.count("data:image/png;base64,") == 3
    for text in (md, page, c.report_md.read_text()):
        assert str(tmp) not in text and "/tmp/" not in text  # no local paths in a hand-in


def _pages(browser: str, html, pdf) -> int:
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.as_uri()],
                   capture_output=True, timeout=180, check=True)
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    return int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.M).group(1))


def test_brief_prints_to_at_most_four_a4_pages_in_a_real_browser(course, tmp_path):
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None or shutil.which("pdfinfo") is None:
        pytest.skip("needs a headless Chromium and pdfinfo (apt-get install chromium "
                    "poppler-utils) to print the page to PDF")
    _, c = course
    brief = _pages(browser, c.brief_html, tmp_path / "brief.pdf")
    full = _pages(browser, c.report_html, tmp_path / "full.pdf")
    print(f"printed A4 pages: brief {brief}, full {full}")
    assert 2 <= brief <= 4 < full


def test_a_sweeps_own_folder_has_its_brief_too(course):
    tmp, _ = course
    depth = tmp / "out" / "depth"
    md = (depth / "brief.md").read_text()
    assert re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", md) == [
        "vs_params.png", "val_loss_vs_params.png", "training_curves.png"]
    assert "## Results" in md and str(tmp) not in (depth / "brief.html").read_text()
