"""The Slurm executor against a real single-node Slurm (../shared/slurm/start-local-slurm.sh).

The cluster is started once per session in a temp dir (with accounting, so sacct works)
and stopped at the end; tests skip with the reason when it cannot start (not root, no
script, apt-get or the daemons fail). Runs are tiny CPU models on a tiny char dataset;
their run directories (the "shared filesystem") live in the test's tmp dir.

The first tests need no Slurm: [executor] validation, sbatch error lines, state merging.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.config import ConfigError
from engine.runs import RunDir
from engine.launch.slurm.executor import SlurmExecutor, SlurmSubmitError, sbatch_error_line
from engine.executor_config import SlurmConfig
from engine.launch.slurm.state import (SlurmState, describe, expand_array_id, merge_status,
                                reconcile)

REPO = Path(__file__).resolve().parents[2]
SLURM_SCRIPTS = REPO.parent / "shared" / "slurm"


# ---- no Slurm needed ---------------------------------------------------------------------

def test_executor_table_is_validated_with_one_line_errors():
    cfg = SlurmConfig.from_dict({"kind": "slurm", "partition": "accel", "account": "nn1k",
                                 "time": "01:30:00", "gpus_per_run": 1, "cpus_per_run": 4,
                                 "mem": "16g", "sbatch_extra": ["--constraint=a100", "--exclusive"],
                                 "setup": ["module load CUDA"], "qos": "devel"})
    p = cfg.sbatch_parameters()
    assert p["time"] == 90 and p["partition"] == "accel" and p["account"] == "nn1k"
    assert p["gpus_per_node"] == 1 and p["cpus_per_task"] == 4 and p["mem"] == "16G"
    assert p["additional_parameters"] == {"constraint": "a100", "exclusive": True}
    assert p["setup"] == ["module load CUDA"] and p["qos"] == "devel"
    assert SlurmConfig.from_dict({"time": "1-00:00:00"}).time_min == 24 * 60
    assert SlurmConfig.from_dict({"time": 5, "signal_delay_s": 30}).time_min == 5
    assert SlurmConfig.from_dict({"sbatch_extra": {"constraint": "a100"}}).sbatch_extra == {
        "constraint": "a100"}
    bad = [({"partiton": "x"}, "did you mean 'partition'"),
           ({"time": "soon"}, "time = 'soon'"),
           ({"mem": 16}, "16G"),
           ({"gpus_per_run": -1}, "gpus_per_run"),
           ({"sbatch_extra": ["constraint=a100"]}, "--constraint=a100"),
           ({"time": 1}, "signal_delay_s")]
    for d, needle in bad:
        with pytest.raises(ConfigError) as e:
            SlurmConfig.from_dict(d, "experiments.toml [executor]")
        msg = str(e.value)
        assert "\n" not in msg and needle in msg and msg.startswith("experiments.toml [executor]")


def test_sbatch_error_is_reduced_to_its_one_line():
    import submitit
    err = ("sbatch: error: invalid partition specified: nosuch\n"
           "sbatch: error: Batch job submission failed: Invalid partition name specified")
    e = submitit.core.utils.FailedJobError(err)
    e.__cause__ = subprocess.CalledProcessError(1, ["sbatch"], stderr=err)
    assert sbatch_error_line(e) == ("sbatch: error: Batch job submission failed: "
                                    "Invalid partition name specified")
    assert issubclass(SlurmSubmitError, ConfigError)  # the CLI prints it as one line


def test_slurm_states_merge_with_status_json():
    base = {"state": "running", "executor": {"kind": "slurm", "job_id": "7_1"}}
    pending = SlurmState("7_1", "PENDING", "Priority")
    shown = merge_status({**base, "slurm_state": "PENDING"}, pending)
    assert shown["state"] == "queued" and shown["reason"] == "pending (Priority)"
    cancelled = merge_status(base, SlurmState("7_1", "CANCELLED", source="sacct"))
    assert cancelled["state"] == "stopped" and "cancelled" in cancelled["reason"]
    oom = reconcile(base, SlurmState("7_1", "OUT_OF_MEMORY", exit_code="0:125"))
    assert oom["state"] == "failed" and oom["reason"].startswith("oom")
    timeout = reconcile(base, SlurmState("7_1", "TIMEOUT"))
    assert timeout["state"] == "failed" and timeout["reason"].startswith("timeout")
    # the trainer's own final word wins over what Slurm says about the job
    done = {**base, "state": "done"}
    assert merge_status(done, SlurmState("7_1", "COMPLETED"))["state"] == "done"
    assert merge_status(done, SlurmState("7_1", "CANCELLED"))["state"] == "done"
    # a resumed run (queued again) is not ended by its old job's end
    resumed = {**base, "state": "queued"}
    assert reconcile(resumed, SlurmState("7_1", "CANCELLED")) == {"slurm_state": "CANCELLED"}
    # the trainer stopped on Slurm's SIGTERM and Slurm requeued the job (preemption)
    pre = reconcile({**base, "state": "stopped"}, SlurmState("7_1", "PENDING", "BeginTime"))
    assert pre["state"] == "running" and "requeued" in pre["reason"]
    assert merge_status({**base, "state": "stopped", "slurm_state": "PENDING"},
                        SlurmState("7_1", "PENDING", "BeginTime"))["state"] == "queued"
    # ... but not a run the user cancelled
    cancelled_run = {**base, "state": "stopped", "executor": {**base["executor"], "cancelled": True}}
    assert "state" not in reconcile(cancelled_run, SlurmState("7_1", "PENDING"))
    # another job's state is not this run's
    assert reconcile(base, SlurmState("8_0", "CANCELLED")) == {}
    assert expand_array_id("15_[1-2,5%3]") == ["15_1", "15_2", "15_5"]
    assert expand_array_id("15_1") == ["15_1"] and expand_array_id("16") == ["16"]
    assert describe({**base, "slurm_state": "RUNNING"}) == "slurm 7_1 RUNNING"
    assert describe({"state": "running", "executor": {"kind": "local"}}) == ""


def test_job_records_the_card_slurm_gave_it(tmp_path, monkeypatch):
    from engine.launch.slurm.job import job_gpu
    fake = tmp_path / "gpus.json"
    fake.write_text(json.dumps({"gpus": [
        {"index": 0, "uuid": "GPU-aaa", "name": "NVIDIA RTX 6000 Ada"},
        {"index": 1, "uuid": "GPU-bbb", "name": "NVIDIA RTX PRO 6000"}]}))
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(fake))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert job_gpu() == {"index": 1, "uuid": "GPU-bbb", "name": "NVIDIA RTX PRO 6000"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa,GPU-bbb")
    assert job_gpu()["index"] == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert job_gpu() is None


def test_checkpoint_stops_the_trainer_and_requeues_until_max_requeues(tmp_path):
    """TrainJob.checkpoint as submitit calls it at the time-limit warning (no Slurm here:
    a sleeping child stands in for the trainer)."""
    from engine.config import TrainConfig
    from engine.runs import create_run
    from engine.launch.slurm.job import TrainJob
    run = create_run(tmp_path / "runs", "s", "a", TrainConfig(n_layer=1, n_head=1, n_embd=8,
                                                              block_size=8, max_iters=10))
    run.update_status(state="running", executor={"kind": "slurm", "job_id": "5_0"})
    job = TrainJob(str(run.path), resume=False, signal_delay_s=20, max_requeues=1)
    job._proc = subprocess.Popen(["sleep", "60"])
    again = job.checkpoint()
    assert job._proc.wait(5) == -15  # SIGTERM: the trainer checkpoints and exits
    st = run.read_status()
    assert st["state"] == "running" and st["slurm_state"] == "REQUEUED"
    assert st["executor"] == {"kind": "slurm", "job_id": "5_0", "requeues": 1}
    assert again.function.run_path == str(run.path) and again.function.max_requeues == 1
    assert job.checkpoint() is None  # the second warning: max_requeues reached, no requeue
    st = run.read_status()
    assert st["state"] == "stopped" and "max_requeues = 1" in st["reason"]


# ---- the local cluster -----------------------------------------------------------------------

def _free_port_base() -> int:
    for base in range(17817, 19000, 10):
        busy = False
        for port in range(base, base + 4):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    busy = True
                    break
        if not busy:
            return base
    return 17817


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running local Slurm (with accounting); SLURM_CONF set for this process and its
    children. Skips with the reason when it cannot start."""
    start, stop = SLURM_SCRIPTS / "start-local-slurm.sh", SLURM_SCRIPTS / "stop-local-slurm.sh"
    if not start.is_file():
        pytest.skip(f"Slurm test cluster script not found: {start}")
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (daemons run as root)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    d = tmp_path_factory.mktemp("slurm")
    # more CPUs than the box has: tiny runs share cores instead of waiting for each other
    cmd = ["bash", str(start), "--clean", "--cpus", "8", "--port-base", str(_free_port_base()),
           str(d)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(stop), str(d)], capture_output=True, timeout=120)
        pytest.skip("the local Slurm cluster did not start within 600 s")
    if p.returncode != 0:
        subprocess.run(["bash", str(stop), str(d)], capture_output=True, timeout=120)
        last = [ln for ln in p.stderr.splitlines() if "ERROR" in ln] or p.stderr.splitlines()[-1:]
        pytest.skip(f"the local Slurm cluster did not start: {last[-1] if last else p.returncode}")
    conf = (d / "env.sh").read_text().strip().split("=", 1)[1]
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    os.environ["PATH"] += ":/usr/sbin:/sbin"
    try:
        _enforce_accounts(d, Path(conf))
        yield d
    finally:
        subprocess.run(["bash", str(stop), str(d)], capture_output=True, timeout=180)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _enforce_accounts(d: Path, conf: Path) -> None:
    """Make the cluster reject unknown accounts, as real clusters do: root gets a default
    account, AccountingStorageEnforce=associations, and slurmctld is restarted (the
    setting is only read at start)."""
    def run(*cmd: str) -> None:
        subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    run("sacctmgr", "-i", "add", "account", "nanotui-test")
    run("sacctmgr", "-i", "add", "user", "root", "account=nanotui-test",
        "defaultaccount=nanotui-test")
    with open(conf, "a") as f:
        f.write("AccountingStorageEnforce=associations\n")
    pid = int((d / "run" / "slurmctld.pid").read_text().strip())
    os.kill(pid, 15)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], 30, "slurmctld to stop")
    run("slurmctld")
    wait_for(lambda: subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True,
                                    text=True).stdout.strip() == "idle", 60, "the node idle")


@pytest.fixture(scope="session")
def char_data(tmp_path_factory) -> Path:
    """A tiny prepared char dataset (train.bin/val.bin uint16 + meta.json)."""
    out = tmp_path_factory.mktemp("chardata")
    text = "the quick brown fox jumps over the lazy dog. once upon a time a cat sat. " * 60
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], dtype=np.uint16)
    n = int(len(ids) * 0.9)
    ids[:n].tofile(out / "train.bin")
    ids[n:].tofile(out / "val.bin")
    (out / "meta.json").write_text(json.dumps({
        "vocab_size": len(chars), "tokenizer": "char", "dtype": "uint16", "chars": chars,
        "eot_token": None, "train_tokens": n, "val_tokens": len(ids) - n}))
    return out


def write_experiments(path: Path, data: Path, executor: dict, max_iters: int = 30,
                      vary: str = "n_embd = [16, 32, 48]", eval_interval: int = 10) -> Path:
    ex = "\n".join(f"{k} = {json.dumps(v)}" for k, v in executor.items())
    path.write_text(f"""
[defaults]
data_dir = "{data}"
tokenizer = "char"
block_size = 16
batch_size = 4
n_layer = 1
n_head = 2
n_embd = 16
max_iters = {max_iters}
lr_decay_iters = {max_iters}
warmup_iters = 0
eval_interval = {eval_interval}
eval_iters = 2
log_interval = 5
device = "cpu"
dtype = "float32"

[sampling]
prompts = ["the "]
max_new_tokens = 16

[executor]
kind = "slurm"
{ex}

[sweep.s]
vary = {{ {vary} }}
""")
    return path


def nanotui(exp: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", "--experiments", str(exp),
                           "--runs", str(exp.parent / "runs"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=exp.parent)


def status_json(exp: Path) -> dict[str, dict]:
    p = nanotui(exp, "status", "--json")
    assert p.returncode == 0, p.stderr
    return {r["id"]: r for r in json.loads(p.stdout)["runs"]}


def wait_for(pred, timeout: float, what: str, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def squeue_ids() -> set[str]:
    p = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True)
    return set(p.stdout.split())


# ---- tests against the cluster -------------------------------------------------------------

@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_runs_as_a_job_array_and_completes(slurm_cluster, char_data, tmp_path,
                                                 time_limit_job):
    # (time_limit_job: started first, checked last, so its minute overlaps this test)
    exp = write_experiments(tmp_path / "experiments.toml", char_data,
                            {"time": "00:10:00", "cpus_per_run": 1, "mem": "500M",
                             "setup": [f"touch {tmp_path}/setup-ran"]})
    p = nanotui(exp, "launch", timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    runs = status_json(exp)
    assert sorted(runs) == ["s/n_embd=16", "s/n_embd=32", "s/n_embd=48"]
    job_ids = set()
    for rid, st in runs.items():
        assert st["state"] == "done", (rid, st)
        assert st["executor"]["kind"] == "slurm"
        job_ids.add(st["executor"]["job_id"].split("_")[0])
        run = RunDir(exp.parent / "runs" / rid)
        evals = [m for m in run.read_metrics() if m["kind"] == "eval"]
        assert [m["iter"] for m in evals] == [0, 10, 20, 30]
        assert run.read_samples() and run.read_samples()[-1]["iter"] == 30
        assert "Slurm job" in run.stdout_path.read_text()
    assert len(job_ids) == 1, f"one job array for the sweep, got jobs {job_ids}"
    assert (tmp_path / "setup-ran").exists(), "the [executor] setup lines ran in the job"
    # Slurm agrees: the three array tasks completed (the trainer writes done just before
    # its job ends, so give the jobs a moment)
    job = job_ids.pop()

    def sacct() -> str:
        return subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", job],
                              capture_output=True, text=True).stdout
    wait_for(lambda: sacct().count("COMPLETED") == 3, 30, f"sacct COMPLETED x3: {sacct()}")
    assert all(st["executor"]["job_id"].startswith(job + "_") for st in runs.values())


@pytest.mark.slurm
@pytest.mark.slow
def test_stop_cancels_a_running_job(slurm_cluster, char_data, tmp_path):
    exp = write_experiments(tmp_path / "experiments.toml", char_data, {"time": 10},
                            max_iters=100000, vary="n_embd = [16]", eval_interval=20)
    p = nanotui(exp, "launch", "--detach")
    assert p.returncode == 0, p.stdout + p.stderr
    rid = "s/n_embd=16"
    run = RunDir(exp.parent / "runs" / rid)
    wait_for(lambda: run.read_status().get("iter", 0) >= 5 and run.ckpt_path.exists(), 120,
             "the job to train past its first eval")
    job = run.read_status()["executor"]["job_id"]
    assert job in squeue_ids()
    row = status_json(exp)[rid]
    assert row["state"] == "running" and row["slurm_state"] == "RUNNING"
    p = nanotui(exp, "stop", rid, "--grace", "20")
    assert p.returncode == 0, p.stdout + p.stderr
    st = run.read_status()
    assert st["state"] == "stopped" and "cancelled" in st["reason"], st
    assert job not in {j for j in squeue_ids()}
    # the trainer got SIGTERM first: it saved a checkpoint at the iteration it reached
    assert _last_line_iter(run) == st["iter"] > 0 and run.ckpt_path.exists(), st
    assert status_json(exp)[rid]["state"] == "stopped"


@pytest.mark.slurm
def test_bad_partition_or_account_is_one_line_and_runs_stay_queued(slurm_cluster, char_data,
                                                                   tmp_path):
    for executor, needle in (({"partition": "nosuchpartition"}, "partition"),
                             ({"account": "nosuchaccount"}, "account")):
        d = tmp_path / needle
        d.mkdir()
        exp = write_experiments(d / "experiments.toml", char_data, executor)
        p = nanotui(exp, "launch")
        assert p.returncode == 2, p.stdout + p.stderr
        err = p.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("nanotui: error: "), p.stderr
        assert "sbatch: error:" in err[0] and needle in err[0].lower(), err
        assert "Traceback" not in p.stdout + p.stderr
        runs = status_json(exp)
        assert len(runs) == 3 and {r["state"] for r in runs.values()} == {"queued"}, runs
        # past that check, a refusal at submission also leaves the runs queued
        runs = [RunDir(exp.parent / "runs" / rid) for rid in sorted(runs)]
        ex = SlurmExecutor(SlurmConfig.from_dict(executor))
        with pytest.raises(SlurmSubmitError) as e:
            ex.submit([(r, False) for r in runs])
        assert "\n" not in str(e.value) and "sbatch: error:" in str(e.value)
        for r in runs:
            st = r.read_status()
            assert st["state"] == "queued" and not st.get("executor"), st


@pytest.fixture(scope="session")
def time_limit_job(slurm_cluster, char_data, tmp_path_factory):
    """A run in 1-minute jobs, launched as early as the first Slurm test asks for it so
    that its wait overlaps the other tests. Slurm warns (USR2) ~15 s before the limit:
    the trainer checkpoints and submitit requeues the job. A watcher thread then applies
    the test shortcuts at once (see _after_requeue) and records what it saw."""
    import threading
    d = tmp_path_factory.mktemp("timelimit")
    exp = write_experiments(d / "experiments.toml", char_data,
                            {"time": 1, "signal_delay_s": 15}, max_iters=1_000_000,
                            vary="n_embd = [16]", eval_interval=20)
    p = nanotui(exp, "launch", "--detach")
    assert p.returncode == 0, p.stdout + p.stderr
    run = RunDir(exp.parent / "runs" / "s/n_embd=16")
    seen: dict = {}

    def watch() -> None:
        try:
            _after_requeue(run, seen)
        except BaseException as e:  # reported by the test
            seen["error"] = e
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return exp, run, t, seen


def _after_requeue(run: RunDir, seen: dict) -> None:
    st = wait_for(lambda: (s := run.read_status()).get("executor", {}).get("requeues") and s,
                  150, "the time-limit warning and the requeue", every=0.2)
    seen["at_requeue"] = st
    seen["stopped_at"] = wait_for(lambda: (n := _last_line_iter(run)) is not None and (n,),
                                  30, "the trainer's stop line")[0]
    # Test shortcuts, not what is tested: the first job's work was open-ended so that the
    # limit surely hits; now leave 20 iterations to do, and skip the ~120 s hold Slurm puts
    # on a requeued job (cred_expire), with a longer limit for the rest.
    _set_max_iters(run, seen["stopped_at"] + 20)
    job = st["executor"]["job_id"]

    def slurm_state() -> str:
        return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                              text=True).stdout.strip()
    # the run records the requeue just before submitit asks Slurm for it
    seen["slurm_after"] = wait_for(lambda: slurm_state() == "PENDING" and "PENDING", 60,
                                   "Slurm to requeue the job (PENDING again)", every=0.2)
    # now+5 s, not now: a start within the second of the requeue is refused by slurmd
    # ("Job credential revoked") and the job fails
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+5", "TimeLimit=5"],
                   check=True, capture_output=True)


@pytest.mark.slurm
@pytest.mark.slow
def test_time_limit_requeues_and_the_run_finishes_from_its_checkpoint(time_limit_job):
    exp, run, watcher, seen = time_limit_job
    watcher.join(200)
    if "error" in seen:
        raise seen["error"]
    st, stopped_at = seen["at_requeue"], seen["stopped_at"]
    job = st["executor"]["job_id"]
    assert st["state"] == "running" and st["slurm_state"] == "REQUEUED", seen
    assert stopped_at > 0 and run.ckpt_path.exists(), seen
    assert seen["slurm_after"] == "PENDING", seen  # Slurm requeued it
    wait_for(lambda: run.read_status().get("state") in ("done", "failed"), 120,
             "the requeued job to finish")
    st = run.read_status()
    assert st["state"] == "done" and st["iter"] == stopped_at + 20, st
    assert st["executor"]["job_id"] == job and st["executor"]["requeues"] == 1
    assert status_json(exp)[run.id]["state"] == "done"
    log = run.stdout_path.read_text()
    assert f"resuming at iter {stopped_at}" in log, log[-2000:]
    iters = [m["iter"] for m in run.read_metrics() if m["kind"] == "train"]
    assert iters == sorted(set(iters)) and iters[-1] == stopped_at + 20, iters
    assert any(i > stopped_at for i in iters) and any(i < stopped_at for i in iters)
    out = subprocess.run(["sacct", "-n", "-P", "-X", "--duplicates", "-o", "JobID,State",
                          "-j", job], capture_output=True, text=True).stdout
    assert "REQUEUED" in out, out


def _last_line_iter(run: RunDir) -> int | None:
    """The iteration of the trainer's 'stopped at iter N; checkpoint saved' line."""
    import re
    m = re.findall(r"stopped at iter (\d+); checkpoint saved", run.stdout_path.read_text())
    return int(m[-1]) if m else None


def _set_max_iters(run: RunDir, n: int) -> None:
    import tomli_w

    from engine.config import load_toml
    cfg = load_toml(run.config_path)
    cfg["max_iters"] = cfg["lr_decay_iters"] = n
    run.config_path.write_text(tomli_w.dumps(cfg))
