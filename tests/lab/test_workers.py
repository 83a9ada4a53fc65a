"""One sweep run by 2 worker processes, on the embedded storage and on a PostgreSQL
server started here, finishes every grid point exactly once, bitwise as the same runs one after another; a worker
killed with SIGKILL mid-trial leaves a trial that the other worker resumes from its checkpoint, bitwise, no
checkpoint lost; the exit status says whether every trial finished."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState

from tests.reliability._lab import final_state
from zolab.lab import study as st
from zolab.lab import sweep, workers
from zolab.lab.rundir import checkpoint_files, read_checkpoint
from zolab.lab.trials import final_metrics

REPO = Path(__file__).resolve().parents[2]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Workers run on one thread each; the references too (a matrix product's rounding depends on the threads).
    The workers import this checkout (and its tests' tasks)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(lrs, steps=10, per_epoch=5, task="zolab.tasks.synthetic.Quadratic", **init):
    return {"name": "w",
            "base": {"model": {"task": {"class_path": task, "init_args": {"dim": 8, **init}},
                               "optimizer": {"class_path": "zolab.ZOAdaMM", "init_args": {"lr": 0.01, "mu": 0.05}}},
                     "data": {"class_path": "zolab.tasks.synthetic.SyntheticDataModule",
                              "init_args": {"steps_per_epoch": per_epoch}},
                     "trainer": {"max_steps": steps, "log_every_n_steps": 1}},
            "grid": {"model.optimizer.init_args.lr": list(lrs)}, "args": QUIET}


def _references(spec, root):
    """The same runs one after another, in this process."""
    _, refs = sweep.load(spec, root=root)
    sweep.run_sweep(refs, log=lambda line: None)
    return {r.run_id: r for r in refs}


def _by_run(study):
    out = {}
    for t in study.get_trials():
        out.setdefault(t.user_attrs["run_id"], []).append(t)
    return out


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own, on a Unix socket in a temporary folder (run as user postgres when root)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl and shutil.which("postgres")):
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl, postgres) on PATH")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("no PostgreSQL driver: pip install 'zolab[sweep-pg]'")
    folder, as_user = Path(tempfile.mkdtemp(prefix="zolab-pg-")), []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no user 'postgres' to run the server as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "zolab", "--auth=trust"], check=True,
                       capture_output=True)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                        f"-k {folder} -p {port} -c listen_addresses=''", "start"], check=True, capture_output=True)
        yield f"postgresql://zolab@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("storage", ["embedded", "postgresql"])
@pytest.mark.slow
def test_acceptance1_two_workers_run_each_grid_point_once_bitwise_as_one_after_another(storage, tmp_path, request,
                                                                                      capfd, monkeypatch):
    lrs = [0.01, 0.02, 0.03, -1.0]  # -1: a run that fails; the sweep goes on and says so in its exit status
    spec = tmp_path / "w.yaml"
    spec.write_text(yaml.safe_dump(_spec(lrs)))
    url = request.getfixturevalue("postgres") if storage == "postgresql" else None
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # the sweep's and its workers' working directory
    args = [str(spec), "--root", str(tmp_path / "r"), "--workers", "2", "--threads", "1", "--heartbeat", "1"]
    assert workers.main([*args, *(["--storage", url] if url else [])]) == 1
    out = capfd.readouterr().out
    assert "3 done, 1 failed of 4 runs" in out and "failed: lr=-1.0: " in out and "invalid lr: -1.0" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "r", "w.yaml"]
    assert not any((tmp_path / "cwd").iterdir())
    db = tmp_path / "r" / "w" / st.DB_FILE
    assert db.exists() == (storage == "embedded")  # nothing outside the root but the storage named
    study = st.load_study(st.open_storage(url or st.default_url(tmp_path / "r", "w")), "w", "sweep")
    by_run = _by_run(study)
    assert sorted(by_run) == sorted(f"lr={lr}" for lr in lrs) and all(len(t) == 1 for t in by_run.values())
    assert {t[0].user_attrs["worker"]["pid"] for t in by_run.values()}.isdisjoint({os.getpid()})  # in workers
    refs = _references(_spec(lrs[:3]), tmp_path / "ref")
    for rid, ref in refs.items():
        (trial,) = by_run[rid]
        assert trial.state == TrialState.COMPLETE and trial.user_attrs["status"] == "done"
        state, step = final_state(tmp_path / "r" / "w" / rid)
        ref_state, ref_step = final_state(ref.run_dir)
        assert step == ref_step == 10 and torch.equal(state["task.x"], ref_state["task.x"])
        assert trial.user_attrs["metrics"] == final_metrics(ref.run_dir)  # train and val loss, forwards, steps
        assert trial.value == final_metrics(ref.run_dir)["val/loss"]
        assert yaml.safe_load((tmp_path / "r" / "w" / rid / sweep.STATUS_FILE).read_text())["status"] == "done"
    assert by_run["lr=-1.0"][0].state == TrialState.FAIL
    assert workers.main([*args, *(["--storage", url] if url else []), "--summary"]) == 1  # the table, from storage
    summary = capfd.readouterr().out.splitlines()
    assert summary[0].split()[:5] == ["run", "lr", "status", "steps", "train/loss"]
    assert summary[2].split()[:4] == ["lr=0.01", "0.01", "done", "10"] and summary[5].split()[:3] == [
        "lr=-1.0", "-1", "failed"]


def _newest(run_dir) -> int:
    """The largest global_step among the run's checkpoints; every checkpoint file must load."""
    steps = [int(read_checkpoint(p, keys=("global_step",))["global_step"]) for p in checkpoint_files(run_dir)]
    return max(steps, default=-1)


@pytest.mark.slow
def test_acceptance2_a_worker_killed_mid_trial_leaves_it_to_the_other_bitwise(tmp_path, capfd):
    """SIGKILL on the worker of a trial with a checkpoint: the other worker resumes that trial from it (at once when
    it sees the process gone, else after the heartbeat's grace), and every run ends bitwise as an uninterrupted
    one; after the kill each checkpoint file still loads and no run's newest checkpoint went back; the sweep exits
    0 (every trial finished)."""
    slow = _spec([0.01, 0.02, 0.03], steps=400, per_epoch=50, task="tests.reliability._lab.SlowQuadratic",
                 sleep=0.004)
    spec = tmp_path / "w.yaml"
    spec.write_text(yaml.safe_dump(slow))
    url, seen = st.default_url(tmp_path / "r", "w"), {}

    def kill_one_worker():  # beside the sweep: find a running trial with a checkpoint, SIGKILL its worker
        storage, deadline = None, time.monotonic() + 600
        while "victim" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                storage = storage or st.open_storage(url)
                running = st.load_study(storage, "w", "sweep", wait=0).get_trials(states=(TrialState.RUNNING,))
            except (ValueError, KeyError):
                continue  # not created yet
            for t in running:
                if "worker" in t.user_attrs and 50 <= _newest(tmp_path / "r" / "w" / t.user_attrs["run_id"]) < 350:
                    seen["before"] = {p.name: _newest(p) for p in (tmp_path / "r" / "w").iterdir() if p.is_dir()}
                    os.kill(t.user_attrs["worker"]["pid"], signal.SIGKILL)
                    seen["victim"] = t
                    break

    watcher = threading.Thread(target=kill_one_worker, daemon=True)
    watcher.start()
    code = workers.main([str(spec), "--root", str(tmp_path / "r"), "--workers", "2", "--threads", "1",
                         "--heartbeat", "2"])
    watcher.join()
    out, err = capfd.readouterr()
    assert "victim" in seen, (out + err)[-4000:]
    assert code == 0 and "3 done of 3 runs" in out and "exit status -9" in out, (out + err)[-4000:]
    victim, before = seen["victim"], seen["before"]
    by_run = _by_run(st.load_study(st.open_storage(url), "w", "sweep"))
    lost, retry = by_run[victim.user_attrs["run_id"]]
    assert lost.state == TrialState.FAIL  # by the other worker: its process gone, or its heartbeat past the grace
    assert lost.user_attrs.get("status") in (None, "lost") and not lost.user_attrs.get("metrics")
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == lost.number
    status = yaml.safe_load((tmp_path / "r" / "w" / victim.user_attrs["run_id"] / sweep.STATUS_FILE).read_text())
    assert status["status"] == "done" and "--ckpt_path=" in status["command"]  # resumed, not run again from 0
    assert all(_newest(tmp_path / "r" / "w" / name) >= step for name, step in before.items())
    refs = _references(_spec([0.01, 0.02, 0.03], steps=400, per_epoch=50), tmp_path / "ref")
    for rid, ref in refs.items():
        assert [t.state for t in by_run[rid]][-1] == TrialState.COMPLETE
        state, step = final_state(tmp_path / "r" / "w" / rid)
        ref_state, ref_step = final_state(ref.run_dir)
        assert step == ref_step == 400 and torch.equal(state["task.x"], ref_state["task.x"]), rid


def test_a_signal_to_the_sweep_reaches_every_worker_and_sets_its_exit_status(tmp_path):
    """``spawn`` starts the workers in sessions of their own (a terminal's Ctrl-C reaches them only through the sweep),
    forwards SIGTERM to each, and reports it; each worker ran on its share of threads."""
    previous = signal.getsignal(signal.SIGTERM)

    def signal_when_ready():
        while len(list(tmp_path.glob("ready-*"))) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_when_ready, daemon=True).start()
    codes, signum = workers.spawn([str(tmp_path)], 2, 3, module="tests.lab._sleeper")
    assert codes == [128 + signal.SIGTERM] * 2 and signum == signal.SIGTERM
    assert [p.read_text() for p in sorted(tmp_path.glob("ready-*"))] == ["3", "3"]
    assert signal.getsignal(signal.SIGTERM) is previous
