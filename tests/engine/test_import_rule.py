"""engine/ is headless: it must never import textual, plotext or tui."""

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
FORBIDDEN = ("textual", "plotext", "textual_plotext", "tui", "rich")


def test_engine_sources_do_not_import_the_ui():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.name}:{node.lineno} imports {n}")
    assert not offenders, offenders


def test_importing_every_engine_module_loads_no_ui_package():
    mods = [f"engine.{p.stem}" for p in ENGINE.glob("*.py") if p.stem != "__init__"]
    code = (f"import importlib, sys\nfor m in {mods!r}: importlib.import_module(m)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
            "print(bad); assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ENGINE.parent)
    assert r.returncode == 0, r.stdout + r.stderr
