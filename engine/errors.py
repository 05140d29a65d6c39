"""One error root for everything a user can act on, and one way to show any error.

Every failure nanotui reports to a person (a bad config key, a missing run, data that
cannot be prepared, a checkpoint that does not fit, a Slurm submission refused) is a
`UserError`: its message is one line that says what is wrong and, where it can, what to
do. The command line catches `UserError` once and prints `one_line(e)`; training writes
`one_line(e)` into status.json's reason. Anything else is a bug and keeps its traceback
in the log, but is still shown as one line (`TypeName: first line`).
"""

from __future__ import annotations

from engine.text import safe_text

MAX_LINE = 300     # foreign error text (a library's message) is cut here
USER_LINE = 1000   # our own messages longer than this (quoting a huge input) lose the middle


class UserError(Exception):
    """A problem the user can act on; str(e) is the whole message, one line."""


def one_line(e: BaseException, limit: int = MAX_LINE) -> str:
    """The first line of an error's message; unexpected errors keep their type's name.
    Our own messages (UserError) end with the remedy, so they are written short instead of
    cut; one that quotes a huge input (a hostile file's key) loses its middle, never its
    end. Foreign text (a library's error) is cut at `limit`."""
    text = safe_text(str(e)).strip()  # torch's and users' text reaches terminals
    first = text.splitlines()[0].strip() if text else ""
    if isinstance(e, UserError):
        if len(first) <= USER_LINE:
            return first
        return first[: USER_LINE // 2 - 2] + " … " + first[-(USER_LINE // 2 - 1):]
    first = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return first if len(first) <= limit else first[: limit - 1] + "…"
