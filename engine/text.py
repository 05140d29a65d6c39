"""Text that a user or a model wrote, made safe to show on a terminal.

A sweep's description, a sample, an error from torch, a name in a status file can hold
escape sequences: an OSC sets the window title or writes the clipboard (OSC 52), a CSI
moves the cursor or hides it, a lone C1 byte starts either on some terminals. Every such
string goes through safe_text before the TUI or the command line shows it: control
sequences are removed whole, other control characters except newline and tab dropped.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"                 # CSI: ESC [ params intermediates final
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC ... BEL or ST
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC ... ST
    r"|\x1b[ -/]*[0-~]?"                        # any other ESC sequence, or a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]?"                  # 8-bit CSI
    r"|[\x9d\x90\x98\x9e\x9f][^\x07\x9c\x1b]*(?:\x07|\x9c)?"  # 8-bit OSC, DCS, SOS, PM, APC
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"           # other C0 (not \t \n), DEL, C1
)


def safe_text(s: str) -> str:
    """`s` without terminal control sequences or control characters (\\n and \\t kept)."""
    return _CONTROL.sub("", s) if s else s
