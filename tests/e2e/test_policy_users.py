"""The fair-share policy between two REAL Unix users: each with their own runs directory
and background dispatcher, real training processes, fake cards, one reservations
directory made by root with a root-owned policy.toml.

Needs root (useradd, running commands as the users); skipped with the reason otherwise.
The users run a throwaway venv of the system python whose .pth file points at this
interpreter's site-packages (torch) and at the worktree: root's own python lives under
/root, which they cannot read."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from engine.launch.gpu import GIB
from tests.conftest import tiny_experiments, write_char_data

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
LONG = {"max_iters": 100000, "lr_decay_iters": 100000, "warmup_iters": 1,
        "eval_interval": 100000, "eval_iters": 1, "log_interval": 100, "dtype": "float32"}


class User:
    def __init__(self, world: "World", name: str):
        self.world, self.name = world, name
        subprocess.run(["useradd", "-M", "-N", "-d", str(world.base / name), "-s",
                        "/usr/sbin/nologin", name], check=True, capture_output=True)
        pw = pwd.getpwnam(name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.home = world.base / name
        self.home.mkdir(mode=0o755)
        os.chown(self.home, self.uid, self.gid)

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if k in ("PATH", "LANG", "LC_ALL", "TZ", "NANOTUI_SHARED_DATA")}
        return {**keep, "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
                "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                "NANOTUI_RESERVATIONS_DIR": str(self.world.res),
                "NANOTUI_FAKE_GPUS": str(self.world.cards),
                "NANOTUI_DATA_DIR": str(self.home / "data-cache"),
                "NANOTUI_CPU_RUNS_DIR": str(self.home / "cpu-runs")}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([str(self.world.python), *args], user=self.uid, group=self.gid,
                           extra_groups=[], env=self.env(), cwd=self.home,
                           capture_output=True, text=True, timeout=120)
        if check:
            assert p.returncode == 0, p.stdout + p.stderr
        return p

    def nanotui(self, exp: str, *args: str) -> str:
        return self.run("-m", "tui", "--experiments", str(self.home / exp), *args).stdout

    def write_experiments(self, name: str, sweep: str, seeds: list[int], per_gpu: int,
                          **model) -> None:
        text = tiny_experiments(self.world.data, {sweep: {"vary": {"seed": seeds}}},
                                defaults={**LONG, **model},
                                sampling={"max_new_tokens": 4, "prompts": ["the"]},
                                launch={"max_runs_per_gpu": per_gpu, "max_cpu_runs": 4})
        p = self.home / name
        p.write_text(text)
        os.chown(p, self.uid, self.gid)

    def status(self, run_id: str) -> dict:
        try:
            return json.loads((self.home / "runs" / run_id / "status.json").read_text())
        except (OSError, ValueError):
            return {}


class World:
    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="nanotui-policy-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.res = self.base / "res"
        self.res.mkdir()
        os.chmod(self.res, 0o1777)
        self.cards = self.base / "cards.json"
        self.data = write_char_data(self.base / "data", "the cat sat on the mat. " * 200)
        for p in [self.base / "data", *(self.base / "data").iterdir()]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        venv = self.base / "venv"
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)],
                       check=True, capture_output=True)
        site = next(venv.glob("lib/python3*/site-packages"))
        (site / "nanotui-test.pth").write_text(
            f"{sysconfig.get_paths()['purelib']}\n{REPO}\n")
        self.python = venv / "bin" / "python"
        self.users: list[User] = []

    def policy(self, text: str) -> None:
        p = self.res / "policy.toml"
        p.write_text(text)  # as root: the only kind of policy every dispatcher trusts
        os.chmod(p, 0o644)

    def set_cards(self, cards: list[dict]) -> None:
        tmp = self.cards.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gpus": cards}))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.cards)

    def stop_all(self) -> None:
        """End the users' processes, each by its pid (every one of them is this test's)."""
        for u in self.users:
            out = subprocess.run(["ps", "-o", "pid=", "-u", str(u.uid)], capture_output=True,
                                 text=True).stdout.split()
            for pid in map(int, out):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        self.stop_all()
        time.sleep(0.5)
        for u in self.users:
            subprocess.run(["userdel", u.name], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def card(i: int, used: int = 0) -> dict:
    return {"index": i, "uuid": f"GPU-policy-{i}", "name": "NVIDIA L40S",
            "memory_total": 48 * GIB, "memory_used": used, "utilization": 0}


@pytest.fixture(scope="module")
def world():
    if os.getuid() != 0:
        pytest.skip("needs root: the test creates two Unix users with useradd")
    if not shutil.which("useradd") or not SYSTEM_PYTHON.exists():
        pytest.skip("needs useradd and /usr/bin/python3 to run as two real users")
    if sys.version_info[:2] != tuple(map(int, subprocess.run(
            [str(SYSTEM_PYTHON), "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True, text=True).stdout.split())):
        pytest.skip("/usr/bin/python3 is not this interpreter's CPython version (torch's ABI)")
    w = World()
    try:
        tag = uuid.uuid4().hex[:6]
        w.users = [User(w, f"ntpa{tag}"), User(w, f"ntpb{tag}")]
        p = w.users[0].run("-c", "import torch, engine, sys; print(engine.__file__)", check=False)
        if p.returncode != 0 or not p.stdout.startswith(str(REPO)):
            pytest.skip(f"another user cannot import torch and engine from here: "
                        f"{(p.stderr or p.stdout).strip().splitlines()[-1:]}")
        yield w
    finally:
        w.close()


def wait_for(what, timeout: float = 60.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}")


def stop_runs(w: World) -> None:
    w.stop_all()  # trainers and dispatchers; their leases die with them
    for u in w.users:
        shutil.rmtree(u.home / "runs", ignore_errors=True)


def test_a_users_second_run_waits_for_their_share_while_another_users_run_is_placed(world):
    a, b = world.users
    world.set_cards([card(0), card(1)])
    world.policy("max_gpus_per_user = 1\n")
    a.write_experiments("a.toml", "a", [1, 2], per_gpu=1)
    b.write_experiments("b.toml", "b", [1], per_gpu=1)
    try:
        a.nanotui("a.toml", "launch", "--detach")

        def a_waits():
            """a's second run waiting for its share while the first runs"""
            return (a.status("a/seed=1").get("state") == "running"
                    and "your share" in (a.status("a/seed=2").get("reason") or ""))
        wait_for(a_waits)
        reason = a.status("a/seed=2")["reason"]
        assert reason == "waiting: your share is 1 GPU (policy.toml); yours: GPU 0"
        b.nanotui("b.toml", "launch", "--detach")
        wait_for(lambda: b.status("b/seed=1").get("state") == "running")
        assert b.status("b/seed=1")["gpu"]["uuid"] == "GPU-policy-1"
        assert a.status("a/seed=1")["gpu"]["uuid"] == "GPU-policy-0"
        assert a.status("a/seed=2")["state"] == "queued"
        out = a.nanotui("a.toml", "status")
        assert f"└ {reason}" in out
        # every user sees the others' counts, read-only
        others = json.loads(b.nanotui("b.toml", "status", "--all-users", "--json"))
        by = {u["user"]: u for u in others["users"]}
        assert (by[a.name]["gpu_runs"], by[a.name]["queued"]) == (1, 1)
        assert (by[b.name]["gpu_runs"], by[b.name]["queued"]) == (1, 0)
        gpus = b.nanotui("b.toml", "gpus")
        assert f"policy: {world.res}/policy.toml; yours: max_gpus_per_user = 1" in gpus
        assert any(line.startswith(f"{a.name} ") and " 1 0 " in " ".join(line.split())
                   for line in gpus.splitlines())
    finally:
        stop_runs(world)


def test_keep_free_gpus_leaves_a_card_empty_for_others(world):
    a, b = world.users
    world.set_cards([card(0), card(1)])
    world.policy("keep_free_gpus = 1\n")
    a.write_experiments("a.toml", "k", [1, 2], per_gpu=1)
    b.write_experiments("b.toml", "kb", [1], per_gpu=1)
    try:
        a.nanotui("a.toml", "launch", "--detach")
        b.nanotui("b.toml", "launch", "--detach")

        def settled():
            """a's first run and b's run on a card, a's second waiting for keep_free_gpus"""
            return (a.status("k/seed=1").get("state") == "running"
                    and b.status("kb/seed=1").get("state") == "running"
                    and "keep_free_gpus" in (a.status("k/seed=2").get("reason") or ""))
        wait_for(settled)
        time.sleep(2)  # a few more polls of both dispatchers: still nobody on the last card
        running = [s for s in (a.status("k/seed=1"), a.status("k/seed=2"), b.status("kb/seed=1"))
                   if s.get("state") == "running"]
        # b's run joins a's card (memory allows; max_runs_per_gpu counts one's own runs)
        assert {s["gpu"]["uuid"] for s in running} == {"GPU-policy-0"} and len(running) == 2
        assert a.status("k/seed=2")["reason"] == (
            "waiting: keep_free_gpus = 1 leaves 1 GPU empty for others (policy.toml)")
        assert not list(world.res.glob("*.lease")) or all(
            json.loads(p.read_text())["uuid"] == "GPU-policy-0"
            for p in world.res.glob("*.lease"))
    finally:
        stop_runs(world)


def test_the_user_with_less_recent_gpu_time_gets_the_next_free_card(world):
    """a has 2 h of GPU time in its ledger, b none. On one card a's first run holds
    memory; b's larger run waits for it; a's second (small) run would fit now but is left
    waiting for b, across the two users' dispatchers; when a's first run ends b's starts."""
    a, b = world.users
    world.policy("max_gpus_per_user = 1\nusage_window_hours = 24\n")
    a.write_experiments("a1.toml", "f1", [1], per_gpu=4)
    a.write_experiments("a2.toml", "f2", [2], per_gpu=4)
    b.write_experiments("b.toml", "fb", [1], per_gpu=4, batch_size=64, block_size=64,
                        n_embd=64)
    small = json.loads(a.nanotui("a1.toml", "plan", "--json", "--device", "gpu"))
    big = json.loads(b.nanotui("b.toml", "plan", "--json", "--device", "gpu"))
    small, big = small["runs"][0]["est_mem_bytes"], big["runs"][0]["est_mem_bytes"]
    assert big > small
    free = 2 * small + (big - small) // 2  # a's first run leaves room for a's second only
    world.set_cards([card(0, used=48 * GIB - free)])
    now = time.time()
    ledger = world.res / f"usage-{a.uid}.jsonl"
    ledger.write_text(json.dumps({"start": now - 3 * 3600, "end": now - 3600,
                                  "uuid": "GPU-policy-0", "run": "old/run"}) + "\n")
    os.chown(ledger, a.uid, a.gid)  # a's own file: only a could have written it
    try:
        a.nanotui("a1.toml", "launch", "--detach")
        wait_for(lambda: a.status("f1/seed=1").get("state") == "running")
        b.nanotui("b.toml", "launch", "--detach")

        def b_waits():
            """b's run waiting, its dispatcher's wait ticket seen"""
            return ("waiting: needs" in (b.status("fb/seed=1").get("reason") or "")
                    and list(world.res.glob(f"wait-{b.uid}-*.ticket")))
        wait_for(b_waits)
        a.nanotui("a2.toml", "launch", "--detach")

        def a_yields():
            """a's second run left waiting for b"""
            return "goes first" in (a.status("f2/seed=2").get("reason") or "")
        wait_for(a_yields)
        assert a.status("f2/seed=2")["reason"] == (
            f"waiting: {b.name} goes first, with less GPU time in the last 24 h (0.0 h "
            f"against your 2.0 h; policy.toml)")
        time.sleep(1.5)
        assert a.status("f2/seed=2")["state"] == "queued"  # it fits, and still waits
        pid = a.status("f1/seed=1")["pid"]
        os.kill(pid, signal.SIGTERM)  # a's first run ends
        wait_for(lambda: b.status("fb/seed=1").get("state") == "running")
        assert b.status("fb/seed=1")["gpu"]["uuid"] == "GPU-policy-0"
        started_b = b.status("fb/seed=1")["started_at"]
        a2 = a.status("f2/seed=2")
        assert a2.get("state") == "queued" or a2["started_at"] > started_b
    finally:
        stop_runs(world)
