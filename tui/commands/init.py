"""`nanotui init [DIR]`: start a project where nanotui was installed with pip, pipx or uv
and there is no checkout to copy from: DIR/experiments.toml, the course's sweeps, from
the copy shipped inside the package (the repository's experiments.toml is the same file)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from engine.config import tomllib  # tomli on Python 3.10
from tui.commands import CommandError

HELP = "write the course's experiments.toml into DIR (default: here); never overwrites"
TEMPLATE = "templates/experiments.toml"


def template_bytes() -> bytes:
    return resources.files("tui").joinpath(TEMPLATE).read_bytes()


def add_arguments(p) -> None:
    p.add_argument("dir", nargs="?", default=".", metavar="DIR",
                   help="directory to start in (created if missing; default: the current one)")


def run(args) -> int:
    target = Path(args.dir) / "experiments.toml"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as f:  # exclusive create: an existing file is never touched
            f.write(template_bytes())
    except FileExistsError:
        raise CommandError(f"{target} already exists: not overwritten (edit it, remove it, "
                           "or pick another DIR)") from None
    except OSError as e:
        raise CommandError(f"cannot write {target}: {e.strerror or e}") from None
    sweeps = ", ".join(tomllib.loads(template_bytes().decode())["sweep"])
    print(f"wrote {target} with the sweeps {sweeps}")
    where = "" if Path(args.dir) == Path(".") else f"cd {args.dir} && "
    print(f"next: {where}nanotui plan depth width heads   (then nanotui, or nanotui launch quick)")
    return 0
