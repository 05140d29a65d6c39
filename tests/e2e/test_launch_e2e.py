"""End to end with real training processes (engine.train.process) on the CPU, tiny models, and a
fake set of two GPUs: placement into the children's environment, kill -9 of a child
(lost) and of the dispatcher (a new launch finishes the queue), resume with continuous
iterations, two launches at once. Every process start is checked against the
dispatchers' journal: no run ever starts twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.launch.queue import dispatcher_pid, read_journal
from engine.runs import RunDir
from tests.conftest import interruptible, write_char_data

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAKE_GPUS = Path(__file__).resolve().parents[1] / "fixtures" / "fake_gpus_2.json"

EXP = """
[defaults]
data_dir = "{data}"
n_layer = 1
n_head = 2
n_embd = 32
block_size = 32
batch_size = 8
max_iters = {iters}
lr_decay_iters = {iters}
warmup_iters = 5
eval_interval = 10
eval_iters = 4
log_interval = 1
learning_rate = 3e-3
dtype = "float32"
[sampling]
max_new_tokens = 16
prompts = ["the cat"]
[launch]
max_runs_per_gpu = 1
max_cpu_runs = {cpu}
stop_grace_s = 5.0
[sweep.t]
vary = {{ n_embd = [16, 32, 48] }}
"""


@pytest.fixture
def data_dir(tmp_path):
    return write_char_data(tmp_path / "data", "the cat sat on the mat. the dog ran to the sun. " * 400)


def nanotui(tmp_path, *args, env=None, check=True, timeout=120):
    cmd = [sys.executable, "-m", "tui", "--experiments", str(tmp_path / "experiments.toml"),
           "--runs", str(tmp_path / "runs"), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def status(tmp_path) -> dict[str, dict]:
    """In-process (polling through a subprocess would load the 2 cores the runs need);
    the `status` command itself is checked at the assertions that matter."""
    from engine.runs import list_runs
    return {r.id: r.read_status() | {"id": r.id} for r in list_runs(tmp_path / "runs")}


def status_cmd(tmp_path) -> dict[str, dict]:
    doc = json.loads(nanotui(tmp_path, "status", "--json").stdout)
    return {r["id"]: r for r in doc["runs"]}


def wait_for(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(x.split("=", 1) for x in raw.decode(errors="replace").split("\0") if "=" in x)


def train_iters(run: RunDir) -> list[int]:
    return [m["iter"] for m in run.read_metrics() if m.get("kind") == "train"]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_placement_kill_resume_and_dispatcher_restart(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(FAKE_GPUS))
    iters = 200  # room to kill the victim mid-run however fast the CPU trains
    (tmp_path / "experiments.toml").write_text(EXP.format(data=data_dir, iters=iters, cpu=1))
    root = tmp_path / "runs"
    out = nanotui(tmp_path, "launch", "--detach").stdout
    assert "3 queued" in out

    # two fake cards, one run each: two start, the third waits in the queue
    def two_running():
        st = status(tmp_path)
        run = [s for s in st.values() if s["state"] == "running" and s.get("pid")]
        return run if len(run) == 2 else None
    running = wait_for(two_running, what="two runs running")
    uuids = json.loads(FAKE_GPUS.read_text())["gpus"]
    assert sorted(s["gpu"]["uuid"] for s in running) == sorted(g["uuid"] for g in uuids)
    for s in running:
        env = environ_of(s["pid"])
        assert env["CUDA_VISIBLE_DEVICES"] == s["gpu"]["uuid"]
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    (queued,) = [i for i, s in status(tmp_path).items() if s["state"] == "queued"]

    # kill -9 the dispatcher: the queued run stays queued, the running ones go on
    dpid = dispatcher_pid(root)
    assert dpid and dpid > 0
    os.kill(dpid, signal.SIGKILL)
    wait_for(lambda: dispatcher_pid(root) is None, 10, "the dispatcher's lock to go")
    time.sleep(1.0)
    assert status(tmp_path)[queued]["state"] == "queued"

    # kill -9 one child once it has a checkpoint past iteration 20
    victim_id = running[0]["id"]
    victim = RunDir(root / victim_id)
    wait_for(lambda: (status(tmp_path)[victim_id].get("best_iter") or 0) >= 10
             or status(tmp_path)[victim_id].get("iter", 0) >= 15, 60, "victim past iter 10")
    wait_for(lambda: victim.ckpt_path.exists(), 10, "a checkpoint")
    os.killpg(running[0]["pid"], signal.SIGSTOP)  # frozen: it cannot finish before the kill
    assert status(tmp_path)[victim_id]["state"] in ("running", "stalled")
    os.killpg(running[0]["pid"], signal.SIGKILL)
    st = wait_for(lambda: (s := status_cmd(tmp_path)[victim_id])["state"] == "failed" and s,
                  10, "the killed run to show failed")
    assert st["reason"] in ("lost",) or "signal 9" in st["reason"]
    human = nanotui(tmp_path, "status").stdout
    assert victim_id in human and "failed" in human

    # a new launch finishes the queue (and leaves the failed run to `resume`)
    out = nanotui(tmp_path, "launch", timeout=150).stdout
    assert "1 failed/stopped" in out and "nanotui resume" in out
    st = status(tmp_path)
    assert st[queued]["state"] == "done"
    assert st[victim_id]["state"] == "failed"

    # resume: continues from the checkpoint; iterations continue without gap or repeat
    before = train_iters(victim)
    out = nanotui(tmp_path, "resume", victim_id, "--wait", timeout=150).stdout
    assert "continues from its checkpoint" in out
    st = status(tmp_path)
    assert all(s["state"] == "done" for s in st.values()), st
    done_iters = train_iters(victim)
    assert done_iters == sorted(set(done_iters)) and done_iters[-1] == iters
    assert done_iters[-1] - done_iters[0] + 1 == len(done_iters)  # log_interval 1: every iteration once
    assert max(before) >= 10

    # the journal: every run started exactly once, plus one resume of the victim
    journal = read_journal(root)
    fresh = Counter(j["run"] for j in journal if not j["resume"])
    assert fresh == Counter({i: 1 for i in st})
    assert [j["run"] for j in journal if j["resume"]] == [victim_id]
    assert "CUDA_VISIBLE_DEVICES=GPU-" in RunDir(root / queued).stdout_path.read_text()


def test_two_launches_at_once_start_each_run_once(tmp_path, data_dir):
    (tmp_path / "experiments.toml").write_text(EXP.format(data=data_dir, iters=8, cpu=2))
    cmd = [sys.executable, "-m", "tui", "--experiments", str(tmp_path / "experiments.toml"),
           "--runs", str(tmp_path / "runs"), "launch"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=150)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    st = status_cmd(tmp_path)
    assert len(st) == 3 and all(s["state"] == "done" for s in st.values()), st
    journal = read_journal(tmp_path / "runs")
    assert Counter(j["run"] for j in journal) == Counter({i: 1 for i in st})
    assert len({j["dispatcher"] for j in journal}) >= 1


def test_ctrl_c_leaves_runs_running_then_stop(tmp_path, data_dir):
    (tmp_path / "experiments.toml").write_text(EXP.format(data=data_dir, iters=100000, cpu=1))
    cmd = [sys.executable, "-m", "tui", "--experiments", str(tmp_path / "experiments.toml"),
           "--runs", str(tmp_path / "runs"), "launch", "t/n_embd=16", "t/n_embd=32"]
    fg = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=interruptible)
    st = wait_for(lambda: (s := status(tmp_path).get("t/n_embd=16", {})).get("iter", 0) >= 3
                  and s, 60, "the first run to train")
    fg.send_signal(signal.SIGINT)
    out = fg.communicate(timeout=30)[0]
    assert fg.returncode == 130, out
    assert "keep running" in out and "1 queued runs go on with a background dispatcher" in out
    from engine.runs import process_matches
    assert process_matches(st["pid"], st["pid_create_time"])  # Ctrl-C did not reach it
    assert status(tmp_path)["t/n_embd=32"]["state"] == "queued"  # one CPU slot, taken

    out = nanotui(tmp_path, "stop", "t").stdout
    assert out.index("t/n_embd=32: stopped") < out.index("t/n_embd=16: stopped")
    after = status_cmd(tmp_path)
    assert after["t/n_embd=16"]["state"] == "stopped"
    assert after["t/n_embd=32"]["reason"] == "stopped before it started"
    assert not process_matches(st["pid"], st["pid_create_time"])
    wait_for(lambda: dispatcher_pid(tmp_path / "runs") is None, 15, "the dispatcher to exit")
    assert [j["run"] for j in read_journal(tmp_path / "runs")] == ["t/n_embd=16"]
