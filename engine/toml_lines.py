"""Best-effort line numbers in a TOML text, for `file:line: key` error messages.

tomllib parses to plain dicts and keeps no positions, so the lines are found again in the
text: table headers (`[sweep.depth]`, quoted dotted keys included) and `key =` lines.
tomllib (the parser every load uses) exposes no positions, and tomlkit, which keeps a
document's formatting for round trips, exposes no line numbers either; hence these lines.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]*?)\s*\]\]?\s*(#.*)?$")


def _split_dotted(s: str) -> list[str]:
    """Split a TOML dotted key (`sweep."a.b".vary`) into its parts, unquoted."""
    parts, cur, quote = [], "", None
    for ch in s:
        if quote:
            if ch == quote:
                quote = None
            else:
                cur += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


class LineFinder:
    """Best-effort line numbers for `table path + key` in a TOML text."""

    def __init__(self, text: str):
        self.lines = text.splitlines()

    def find(self, table: list[str], key: str | None = None) -> int | None:
        current: list[str] = []
        header_line = None
        for no, raw in enumerate(self.lines, 1):
            m = _HEADER.match(raw)
            if m and not raw.lstrip().startswith(("#",)):
                current = _split_dotted(m.group(1))
                if current == table:
                    header_line = no
                    if key is None:
                        return no
                continue
            if key is None:
                continue
            stripped = raw.strip()
            if current == table and re.match(rf"""^["']?{re.escape(key)}["']?\s*[=.]""",
                                             stripped):
                return no
            # dotted keys from a parent table: `[sweep]` + `depth.vary = ...`
            if current == table[:len(current)] and len(current) < len(table):
                rest = ".".join(table[len(current):] + [key])
                if stripped.startswith(rest):
                    return no
        return header_line

    def find_in_line(self, line: int | None, needle: str) -> int | None:
        """The first line at or after `line` (inline tables may span lines) mentioning
        `needle` as a key, else `line`."""
        if line is None:
            return None
        for no in range(line, min(line + 20, len(self.lines)) + 1):
            if re.search(rf"""(^|[\s{{,])["']?{re.escape(needle)}["']?\s*=""",
                         self.lines[no - 1]):
                return no
        return line


# ---- limits checked before parsing ------------------------------------------------------------
#
# tomllib builds one nested dict per part of a dotted key and recurses once per level of
# nested arrays: a 130 KB key of 30,000 parts took 2.4 GB, 3,000 nested arrays a
# RecursionError. Both are counted on the text first, strings and comments blanked out.

MAX_KEY_PARTS = 16   # experiments use 4 (sweep.NAME.vary.KEY)
MAX_NESTING = 16     # arrays and inline tables inside each other (a table header is 1)
_STRINGS = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'[^\'\n]*\'|#[^\n]*')
_BRACKETS = re.compile(r"[\[\]{}]")
_SEGMENTS = re.compile(r"[^=,{\[\n]+")


def limit_problem(text: str, max_bytes: int) -> str | None:
    """Why `text` is too big or too deep to parse safely, or None. Linear in its length."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return f"{size:,} bytes, over the {max_bytes:,} this file may have"
    bare = _STRINGS.sub('""', text)
    depth = deepest = 0
    for m in _BRACKETS.finditer(bare):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            return f"arrays or tables nested over {MAX_NESTING} deep"
    parts = max((s.count(".") + 1 for s in _SEGMENTS.findall(bare)), default=0)
    if parts > MAX_KEY_PARTS:
        return f"a dotted key of {parts:,} parts (at most {MAX_KEY_PARTS})"
    return None


def read_limited(path, max_bytes: int) -> str:
    """A TOML file's text, reading at most max_bytes + 1 bytes (limit_problem says the
    rest); OSError / UnicodeDecodeError as open() and decode would raise them."""
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    # cut mid-character when oversized: still over the limit once decoded
    return raw.decode("utf-8", "replace" if len(raw) > max_bytes else "strict")
