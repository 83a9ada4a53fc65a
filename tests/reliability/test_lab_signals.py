"""SIGTERM ends a run with a checkpoint and status 143 that sweeps record as interrupted; a sweep killed by SIGTERM,
SIGINT and SIGKILL and resumed with ``--resume`` ends bitwise where an uninterrupted sweep ends, losing no
checkpoint. Signals go to real subprocesses. Each test failed before its fix."""

import functools
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.reliability._lab import (
    SST2,
    final_state,
    quadratic_args,
    sst2_config,
    sst2_texts,
    tiny_lm_folder,
    zolab_process,
)
from zolab.lab import sweep, workers
from zolab.lab.rundir import checkpoint_files, read_checkpoint

SLOW = "tests.reliability._lab.SlowQuadratic"  # a Quadratic whose steps take >= 2 ms: signals land mid-run


@pytest.fixture(autouse=True)
def one_thread():
    """The subprocesses run on one thread (OMP_NUM_THREADS=1); in-process references must too, since a matrix
    product's rounding depends on how many threads share it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _wait(predicate, proc, timeout=240.0, what="the run"):
    """Poll until ``predicate()``; fail with the process's output if it ends first or time runs out."""
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (status {proc.returncode}) before {what}:\n{_output(proc)}")
        if time.monotonic() - start > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}:\n{_output(proc)}")
        time.sleep(0.05)


def _output(proc) -> str:
    return proc.stdout.read()[-4000:] if proc.stdout is not None else ""


def _newest(run_dir) -> int:
    """The largest global_step among the run's checkpoints; every checkpoint file must load."""
    steps = [int(read_checkpoint(p, keys=("global_step",))["global_step"]) for p in checkpoint_files(run_dir)]
    return max(steps, default=-1)


# ---------------------------------------------------------------- SIGTERM
@pytest.mark.slow
def test_sigterm_on_zolab_fit_ends_with_status_143_and_a_checkpoint_that_resumes_exactly(tmp_path):
    """`kill -TERM` on `zolab fit` used to exit 0 at step 4,701 of 30,000, as if the run had finished."""
    args = quadratic_args(tmp_path, f"--model.task={SLOW}", "--version=v", steps=600, per_epoch=50, dim=8)
    run_dir = tmp_path / "t" / "v"
    proc = zolab_process(args, cwd=tmp_path)
    _wait(lambda: _newest(run_dir) >= 50, proc, what="the step-50 checkpoint")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, _output(proc)
    out = _output(proc)
    assert "stopped by SIGTERM after step" in out and "Traceback" not in out
    saved = read_checkpoint(run_dir / "checkpoints" / "on_exception.ckpt")
    assert 50 <= saved["global_step"] < 600
    from zolab.lab.cli import cli_main

    resumed = cli_main([*args, f"--ckpt_path={run_dir / 'checkpoints' / 'on_exception.ckpt'}"])
    reference = cli_main(quadratic_args(tmp_path, f"--model.task={SLOW}", "--model.task.init_args.sleep=0",
                                        steps=600, per_epoch=50, dim=8, name="ref"))
    assert resumed.trainer.global_step == 600 and torch.equal(resumed.model.task.x, reference.model.task.x)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the launcher's processes in /proc")
@pytest.mark.slow
def test_sigterm_to_the_launcher_of_two_processes_stops_both_within_10_s_with_a_checkpoint_that_resumes(tmp_path):
    """`kill PID` (or `docker stop`) reaches only the process Lightning started the others from: the run used to
    stall for the 120 s collective timeout and end with status 1 and gloo tracebacks. Now both processes stop at
    the same step, the checkpoint is saved, and the launcher exits 143; the checkpoint resumes bitwise (in one
    process: data parallel on an exact objective is bitwise one process)."""
    two = ["--trainer.strategy=zo", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    args = quadratic_args(tmp_path, f"--model.task={SLOW}", "--version=v", *two, steps=1000, per_epoch=50, dim=8)
    run_dir = tmp_path / "t" / "v"
    proc = zolab_process(args, cwd=tmp_path)
    children = []
    try:
        _wait(lambda: _newest(run_dir) >= 50, proc, what="the step-50 checkpoint")
        children = _children(proc.pid)
        assert len(children) == 1, children
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        while any(map(_alive, children)) and time.monotonic() - start < 60:
            time.sleep(0.05)
        elapsed = time.monotonic() - start
    finally:
        for pid in [proc.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    out = _output(proc)
    assert code == 143 and elapsed < 10, (code, elapsed, out)
    assert "stopped by SIGTERM after step" in out and "Traceback" not in out, out
    saved = tmp_path / "t" / "v" / "checkpoints" / "on_exception.ckpt"
    assert 50 <= read_checkpoint(saved)["global_step"] < 1000
    from zolab.lab.cli import cli_main

    one = quadratic_args(tmp_path, f"--model.task={SLOW}", "--model.task.init_args.sleep=0", steps=1000, per_epoch=50,
                         dim=8, name="one")
    resumed = cli_main([*one, f"--ckpt_path={saved}"])
    reference = cli_main([*one, "--version=reference"])
    assert resumed.trainer.global_step == 1000 and torch.equal(resumed.model.task.x, reference.model.task.x)


def _quadratic_spec(root_args=()):
    return {
        "name": "q",
        "base": {"model": {"task": {"class_path": "zolab.tasks.synthetic.Quadratic", "init_args": {"dim": 8}},
                           "optimizer": {"class_path": "zolab.ZOAdaMM", "init_args": {"lr": 0.01, "mu": 0.05}}},
                 "data": {"class_path": "zolab.tasks.synthetic.SyntheticDataModule",
                          "init_args": {"steps_per_epoch": 4}}},
        "grid": {"model.optimizer.init_args.lr": [0.01, 0.02]},
        "args": ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                 "--trainer.max_steps=10", *root_args],
    }


def test_a_sigterm_in_a_sweep_is_recorded_as_interrupted_and_resumed(tmp_path, capsys):
    """In a sweep, the SIGTERM'd run was logged "done" and --resume skipped it for ever."""
    spec = tmp_path / "q.yaml"
    sigterm = ["--trainer.callbacks+=tests.reliability._lab.SignalAt", "--trainer.callbacks.step=5",
               f"--trainer.callbacks.signum={int(signal.SIGTERM)}"]
    spec.write_text(yaml.safe_dump(_quadratic_spec(sigterm)))
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert workers.main([str(spec), "--root", str(tmp_path / "runs")]) == 143
    finally:
        signal.signal(signal.SIGTERM, handler)
    first = tmp_path / "runs" / "q" / "lr=0.01"
    status = yaml.safe_load((first / sweep.STATUS_FILE).read_text())
    assert status["status"] == "interrupted" and "SIGTERM" in status["error"]
    assert not (tmp_path / "runs" / "q" / "lr=0.02").exists()  # the sweep stopped after the interrupted run
    assert "1 interrupted" in capsys.readouterr().out
    # run 1 resumes past its signal and finishes; run 2 gets the same SIGTERM at its step 6; then it resumes
    assert workers.main([str(spec), "--root", str(tmp_path / "runs"), "--resume"]) == 143
    assert yaml.safe_load((first / sweep.STATUS_FILE).read_text())["status"] == "done"
    assert workers.main([str(spec), "--root", str(tmp_path / "runs"), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "lr=0.01: finished before, skipped" in out and "1 done, 1 skipped of 2 runs" in out
    _, refs = sweep.load(_quadratic_spec(), root=tmp_path / "ref")
    sweep.run_sweep(refs, log=lambda line: None)
    for ref in refs:
        state, step = final_state(tmp_path / "runs" / "q" / ref.run_id)
        ref_state, ref_step = final_state(ref.run_dir)
        assert step == ref_step == 10 and torch.equal(state["task.x"], ref_state["task.x"])


# ---------------------------------------------------------------- a sweep killed three ways resumes bitwise
@pytest.mark.skipif(not SST2.is_dir(), reason="no ../shared/data")
@pytest.mark.slow
def test_a_sweep_killed_by_sigterm_sigint_and_sigkill_resumes_bitwise(tmp_path):
    """A two-run sweep (SST-2 with a tiny LoRA Llama, 40 steps; a Quadratic, 600 steps) in a subprocess: SIGTERM
    at a random point of run 1, SIGINT at a random point after the resume, SIGKILL at a random point after the
    next resume, then a last --resume. Every run's final tensors equal an uninterrupted sweep's bitwise; after
    every signal each checkpoint file still loads and no run's newest checkpoint is older than before."""
    rng = random.Random(13)
    lm = tiny_lm_folder(tmp_path / "lm", sst2_texts())
    sst2 = sst2_config(lm, steps=40)
    (tmp_path / "sst2.yaml").write_text(yaml.safe_dump(sst2))
    synthetic = {"trainer": {"max_steps": 600, "log_every_n_steps": 10, "enable_progress_bar": False,
                             "enable_model_summary": False},
                 "model": {"task": {"class_path": SLOW, "init_args": {"dim": 8}},
                           "optimizer": {"class_path": "zolab.RAdaZO", "init_args": {"lr": 0.02, "mu": 0.05}}},
                 "data": {"class_path": "zolab.tasks.synthetic.SyntheticDataModule",
                          "init_args": {"steps_per_epoch": 50}}}
    (tmp_path / "synthetic.yaml").write_text(yaml.safe_dump(synthetic))
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"name": "a2", "grid": {"config": ["sst2.yaml", "synthetic.yaml"]}}))
    runs = {name: tmp_path / "runs" / "a2" / name for name in ("sst2", "synthetic")}
    command = ["sweep", str(spec), "--root", str(tmp_path / "runs")]

    newest = {name: -1 for name in runs}

    def observe():
        for name, run_dir in runs.items():
            step = _newest(run_dir)
            assert step >= newest[name], f"{name}: newest checkpoint went back from {newest[name]} to {step}"
            newest[name] = step

    for signum, target in ((signal.SIGTERM, "sst2"), (signal.SIGINT, "synthetic"), (signal.SIGKILL, "synthetic")):
        before = dict(newest)
        proc = zolab_process(command + (["--resume"] if signum != signal.SIGTERM else []), cwd=tmp_path)
        progressed = functools.partial(lambda run_dir, step: _newest(run_dir) > step, runs[target], before[target])
        _wait(progressed, proc, what=f"a new checkpoint of {target}")
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signum)
        code = proc.wait(timeout=120)
        assert code == (-9 if signum == signal.SIGKILL else 128 + signum), _output(proc)
        observe()
    proc = zolab_process(command + ["--resume"], cwd=tmp_path)
    assert proc.wait(timeout=600) == 0, _output(proc)
    observe()
    for name in runs:
        assert yaml.safe_load((runs[name] / sweep.STATUS_FILE).read_text())["status"] == "done"

    from zolab.lab.cli import cli_main

    for name, config in (("sst2", sst2), ("synthetic", synthetic)):
        reference = cli_main(["fit", "--config", json.dumps(config), f"--trainer.default_root_dir={tmp_path / 'ref'}",
                              f"--name={name}"])
        state, step = final_state(runs[name])
        assert step == reference.trainer.global_step
        expected = reference.model.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected), name
