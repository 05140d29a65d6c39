"""policy.toml: strict parsing (one line naming file, line and key), the last good policy
kept through a typo (in memory and in the per-user cache), planted files skipped, quiet
hours and per-user caps."""

from __future__ import annotations

import os
import time

import pytest

from engine.config import ConfigError
from engine.launch.policy import Caps, PolicyWatch, parse_policy, user_name
from tests.conftest import shared_dir

GOOD = """\
max_gpus_per_user = 1
max_runs_per_user = 2
keep_free_gpus = 1
usage_window_hours = 12

[quiet_hours]
start = "22:00"
end = "07:00"
max_gpus_per_user = 4
keep_free_gpus = 0

[users.{me}]
max_runs_per_user = 5
"""


@pytest.fixture
def board(tmp_path, monkeypatch):
    return shared_dir(tmp_path / "res", monkeypatch, reservations=False)


def at(hour: int) -> float:
    """A time today at `hour` local time."""
    t = time.localtime()
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, hour, 30, 0, 0, 0, -1))


def test_a_good_policy_gives_each_user_their_caps_and_quiet_hours_only_relax():
    me = os.getuid()
    p = parse_policy(GOOD.format(me=user_name(me)), "policy.toml")
    assert p.usage_window_hours == 12
    assert p.caps_for(me, at(12)) == Caps(1, 5, 1)          # own override: 5 runs
    assert p.caps_for(me + 12345, at(12)) == Caps(1, 2, 1)  # nobody's override
    assert p.caps_for(me + 12345, at(23)) == Caps(4, 2, 0)  # quiet: looser, wraps midnight
    assert p.caps_for(me + 12345, at(3)) == Caps(4, 2, 0)
    assert p.caps_for(me + 12345, at(7)) == Caps(1, 2, 1)
    assert parse_policy("", "p").caps_for(me, at(12)) == Caps()  # a key left out: no limit


@pytest.mark.parametrize("text, where", [
    ("max_gpus_per_user = 1\nmax_gpu_per_user = 2\n", "p.toml:2: max_gpu_per_user: unknown key"),
    ("keep_free_gpus = 1\nmax_runs_per_user = \"2\"\n",
     "p.toml:2: max_runs_per_user: must be a whole number >= 0, not '2'"),
    ("max_gpus_per_user = -1\n", "p.toml:1: max_gpus_per_user: must be a whole number"),
    ("max_gpus_per_user = true\n", "p.toml:1: max_gpus_per_user: must be a whole number"),
    ("[quiet_hours]\nstart = \"25:00\"\nend = \"07:00\"\n",
     "p.toml:2: quiet_hours.start: must be \"HH:MM\""),
    ("[quiet_hours]\nstart = \"22:00\"\n", "quiet_hours.end: missing"),
    ("[users.bob]\n\nmax_gpus = 3\n", "p.toml:3: users.bob.max_gpus: unknown key"),
    ("usage_window_hours = 0\n", "p.toml:1: usage_window_hours: must be hours"),
    ("max_gpus_per_user = 1\nkeep_free_gpus = = 2\n", "p.toml:2: keep_free_gpus: invalid TOML: Invalid value"),
])
def test_a_malformed_policy_is_one_line_naming_file_line_and_key(text, where):
    with pytest.raises(ConfigError) as e:
        parse_policy(text, "p.toml")
    msg = str(e.value)
    assert where in msg and "\n" not in msg


def test_an_oversized_policy_is_refused_before_parsing():
    with pytest.raises(ConfigError, match="refused: .* bytes, over the"):
        parse_policy("# " + "x" * 70_000 + "\n", "p.toml")


def test_a_typo_keeps_the_last_good_policy_in_memory_and_for_a_fresh_dispatcher(board):
    pol = board / "policy.toml"
    pol.write_text("max_gpus_per_user = 1\n")
    watch = PolicyWatch(board)
    assert watch.current().policy.caps == {"max_gpus_per_user": 1}
    pol.write_text("max_gpus_per_user = 1\nmax_gpu_per_user = 3\n")
    st = watch.current()
    assert st.policy.caps == {"max_gpus_per_user": 1} and not st.blocked
    assert st.line() == (f"policy: {pol}:2: max_gpu_per_user: unknown key (expected one of "
                         f"max_gpus_per_user, max_runs_per_user, keep_free_gpus, "
                         f"usage_window_hours, quiet_hours, users); going on under the last "
                         f"good policy")
    fresh = PolicyWatch(board).current()  # started after the typo: the per-user cache
    assert fresh.policy.caps == {"max_gpus_per_user": 1} and fresh.problem


def test_a_typo_with_no_last_good_policy_blocks_instead_of_lifting_the_caps(board):
    (board / "policy.toml").write_text("max_gpus_per_user = one\n")
    st = PolicyWatch(board).current()
    assert st.blocked and st.policy is None
    assert "GPUs wait until it is fixed" in st.line() and "policy.toml:1" in st.line()


def test_without_a_policy_file_nothing_is_limited(board):
    st = PolicyWatch(board).current()
    assert st.policy is None and not st.blocked and st.line() is None


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to plant a file as another user")
def test_a_policy_planted_by_another_user_is_skipped_and_said(board):
    pol = board / "policy.toml"
    pol.write_text("max_gpus_per_user = 0\n")
    os.chown(pol, 65534, 65534)  # nobody: a student, not root nor the directory's owner
    st = PolicyWatch(board).current()
    assert st.policy is None and not st.blocked
    assert st.line() == (f"policy: {pol} skipped (owned by {user_name(65534)}, not root or "
                         f"the directory's owner): no fair-share limits")


def test_a_writable_or_linked_policy_is_skipped(board, tmp_path):
    pol = board / "policy.toml"
    pol.write_text("max_gpus_per_user = 0\n")
    os.chmod(pol, 0o666)
    assert "writable by others" in PolicyWatch(board).current().line()
    pol.unlink()
    (tmp_path / "real.toml").write_text("max_gpus_per_user = 0\n")
    pol.symlink_to(tmp_path / "real.toml")
    st = PolicyWatch(board).current()
    assert st.policy is None and "not a regular file" in st.line()
