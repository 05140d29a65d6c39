"""The `nanotui` command line: the TUI by default, headless subcommands for scripts.

Every subcommand lives in tui/commands/<name>.py and is imported only when used, so
`nanotui status` does not pay for importing torch or textual.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from engine.errors import UserError, one_line
from engine.version import nanotui_version
from tui.commands import CommandError  # noqa: F401  (re-exported for callers of tui.cli)

COMMANDS = ["init", "prepare", "plan", "launch", "status", "stop", "resume", "sample", "report",
            "gpus", "doctor", "bench", "demo", "dispatch", "import", "export", "eval", "bundle",
            "verify", "leaderboard"]
HIDDEN = {"dispatch"}  # internal: the background dispatcher started by `launch --detach`
MODULES = {"import": "import_runs",  # a command whose name is a Python keyword
           "eval": "evaluate"}        # or a builtin


def _load(name: str):
    return importlib.import_module(f"tui.commands.{MODULES.get(name, name)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanotui",
        description="Run small-GPT scaling experiments from the terminal. With no command, "
                    "opens the TUI on the experiments file.",
        epilog="Run 'nanotui COMMAND --help' for a command's options. "
               "NANOTUI_DATA_DIR sets the prepared-data cache.")
    add_global_options(parser)
    parser.add_argument("--version", action="version", version=f"nanotui {nanotui_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name)
        kwargs = {} if name in HIDDEN else {"help": mod.HELP}
        p = sub.add_parser(name, description=mod.HELP, **kwargs)
        add_global_options(p, suppress=True)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def add_global_options(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    # On subcommands the defaults are SUPPRESS so `nanotui --runs X status` keeps X.
    default = argparse.SUPPRESS if suppress else None
    p.add_argument("--experiments", metavar="FILE", default=default,
                   help="experiments file (default: ./experiments.toml)")
    p.add_argument("--runs", metavar="DIR", default=default,
                   help="runs directory (default: runs/ beside the experiments file)")


def resolve_paths(args: argparse.Namespace) -> None:
    """Fill args.experiments and args.runs with Paths."""
    exp = Path(args.experiments or os.environ.get("NANOTUI_EXPERIMENTS") or "experiments.toml")
    args.experiments = exp
    runs = args.runs or os.environ.get("NANOTUI_RUNS")
    args.runs = Path(runs) if runs else exp.resolve().parent / "runs"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_paths(args)
    try:
        if getattr(args, "_run", None) is None:
            return run_tui(args)
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"nanotui: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nanotui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        from engine.files import NoSpace, is_no_space
        if not is_no_space(e):
            raise
        what = e if isinstance(e, NoSpace) else NoSpace(Path(e.filename or args.runs))
        print(f"nanotui: error: {what} (free some space and try again)", file=sys.stderr)
        return 1


def run_tui(args: argparse.Namespace) -> int:
    from tui.app import run  # here, not at the top: `nanotui status` never imports textual
    return int(run(args) or 0)
