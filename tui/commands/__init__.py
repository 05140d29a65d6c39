"""One module per subcommand. Each defines HELP (one line), add_arguments(parser) and
run(args) -> exit code, and is listed in tui.cli.COMMANDS."""

from engine.errors import UserError


class CommandError(UserError):
    """A failure of the command line itself (bad arguments): one line, exit status 2."""
