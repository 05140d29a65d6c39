"""One-line errors: our own messages keep their remedy (the end); foreign text is cut."""

from __future__ import annotations

from engine.errors import UserError, one_line


def test_a_long_user_error_is_whole_and_a_huge_one_keeps_its_end():
    long = "cannot do it: " + "p/" * 200 + " (put the files in /x/)"
    assert one_line(UserError(long)) == long            # 425 characters: not cut at 300
    msg = one_line(UserError("bad key " + "x" * 5000 + ": rename it"))
    assert len(msg) <= 1000 and msg.startswith("bad key xxx") and msg.endswith("x: rename it")


def test_foreign_text_is_cut_with_its_type():
    msg = one_line(RuntimeError("y" * 1000 + "\nsecond line"))
    assert msg.startswith("RuntimeError: yyy") and len(msg) == 300 and msg.endswith("…")
