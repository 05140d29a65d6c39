"""One module per subcommand. Each defines HELP (one line), add_arguments(parser) and
run(args) -> exit code, and is listed in tui.cli.COMMANDS."""
