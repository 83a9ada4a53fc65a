"""``zolab.lab.study`` and ``zolab.lab.trials``: the storage, the checks before any run, claims, heartbeats and the
table, without training (the sweeps that train are in test_workers.py)."""

import os
import subprocess
import sys
import threading
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from torch.utils.tensorboard import SummaryWriter

from zolab.lab import study as st
from zolab.lab import sweep
from zolab.lab.trials import final_metrics, rows, table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spec(lrs=(0.01, 0.02), dim=8, name="abl"):
    return {"name": name,
            "base": {"model": {"task": {"class_path": "zolab.tasks.synthetic.Quadratic", "init_args": {"dim": dim}},
                               "optimizer": {"class_path": "zolab.RAdaZO", "init_args": {"lr": 0.01}}}},
            "grid": {"model.optimizer.init_args.lr": list(lrs)}}


def _write(path, spec):
    path.write_text(yaml.safe_dump(spec))
    return path


def _open(tmp_path, name="abl", heartbeat=1):
    (tmp_path / "r" / name).mkdir(parents=True, exist_ok=True)
    return st.open_storage(st.default_url(tmp_path / "r", name), heartbeat)


def _prepare(tmp_path, spec_file, **kwargs):
    name, runs = sweep.load(spec_file, root=tmp_path / "r")
    storage = _open(tmp_path, name)
    return storage, st.prepare(storage, st.study_name(name, spec_file), runs, spec_file, log=lambda line: None,
                               **kwargs), runs


# ---------------------------------------------------------------- storage URLs
@pytest.mark.parametrize("url, match", [
    ("runs/study.db", r"--storage 'runs/study.db' is not a database URL"),
    ("sqlite://", r"an in-memory database cannot be shared"),
    ("mysql://u@127.0.0.1:1/db", r"--storage mysql://u@127.0.0.1:1/db: its database driver is not installed"),
    ("postgresql://u:secret@127.0.0.1:1/db",
     r"--storage postgresql://u:\*\*\*@127.0.0.1:1/db: cannot open it: .*refused"),
])
def test_a_bad_storage_url_is_refused_with_its_name(url, match, tmp_path):
    with pytest.raises(ValueError, match=match) as err:
        st.open_storage(url)
    assert "secret" not in str(err.value)


def test_a_summary_does_not_create_a_missing_database(tmp_path):
    with pytest.raises(ValueError, match="no such database file"):
        st.open_storage(f"sqlite:///{tmp_path / 'none.db'}", create=False)
    assert not (tmp_path / "none.db").exists()


def test_the_embedded_storage_stays_inside_the_root(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "r").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "r" / "abl")
    with pytest.raises(ValueError, match="outside the runs root"):
        st.default_url(tmp_path / "r", "abl")


# ---------------------------------------------------------------- the grid as trials, and the checks
def test_the_grid_becomes_waiting_trials_keyed_by_run_id(tmp_path):
    storage, study, runs = _prepare(tmp_path, _write(tmp_path / "abl.yaml", _spec()))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.WAITING] * 2
    assert [t.user_attrs["run_id"] for t in trials] == ["lr=0.01", "lr=0.02"]
    assert [t.params for t in trials] == [{"model.optimizer.init_args.lr": lr} for lr in (0.01, 0.02)]
    assert not any("default_root_dir" in a for a in trials[0].user_attrs["args"])
    assert study.user_attrs[st.KIND] == "sweep" and study.user_attrs[st.ORIGIN]["host"] == st.HOST


def test_a_study_made_by_another_sweep_file_is_refused(tmp_path):
    _prepare(tmp_path, _write(tmp_path / "abl.yaml", _spec()))
    (tmp_path / "other").mkdir()
    other = _write(tmp_path / "other" / "abl.yaml", _spec(dim=9))
    with pytest.raises(ValueError, match=r"was made by another sweep file \(.*/abl.yaml on .*\) than .*other/abl.yaml: "
                                         r"every run's arguments -model.task.init_args.dim=8 "
                                         r"\+model.task.init_args.dim=9\. Refused before any run"):
        _prepare(tmp_path, other)


def test_a_changed_or_shrunk_grid_is_refused_and_a_grown_one_says_what_it_adds(tmp_path):
    path = _write(tmp_path / "abl.yaml", _spec())
    _prepare(tmp_path, path)
    _write(path, _spec(lrs=(0.01,)))
    with pytest.raises(ValueError, match=r"abl.yaml changed under study 'abl' .*not in the file: lr=0.02"):
        _prepare(tmp_path, path)
    rules = tmp_path / "rule.yaml"
    _write(rules, {"class_path": "zolab.ZOSGD"})
    spec = _spec()
    spec["base"]["model"]["optimizer"] = "rule.yaml"  # a YAML file counts by its content
    _write(path, spec)
    with pytest.raises(ValueError, match=r"changed under .*every run's arguments"):
        _prepare(tmp_path, path)
    _write(path, _spec(lrs=(0.01, 0.02, 0.03)))
    lines = []
    name, runs = sweep.load(path, root=tmp_path / "r")
    study = st.prepare(_open(tmp_path), "abl", runs, path, log=lines.append)
    assert lines == ["sweep abl: the grid grew: 1 run(s) added to the study: lr=0.03"]
    assert [t.user_attrs["run_id"] for t in study.get_trials()] == ["lr=0.01", "lr=0.02", "lr=0.03"]


def test_two_sweep_files_of_one_name_share_the_folder_but_not_a_run(tmp_path):
    """As experiments/minilm/grid.yaml and grid_sgd.yaml: two studies, NAME and NAME/STEM, one runs folder."""
    _prepare(tmp_path, _write(tmp_path / "abl.yaml", _spec()))
    storage, study, _ = _prepare(tmp_path, _write(tmp_path / "sgd.yaml", _spec(lrs=(0.5,))))
    assert study.study_name == "abl/sgd" and len(study.get_trials()) == 1
    with pytest.raises(ValueError, match=r"run lr=0.01 of 'abl/dim9' is also a run of study 'abl' .* other arguments"):
        _prepare(tmp_path, _write(tmp_path / "dim9.yaml", _spec(dim=9)))


def test_a_study_that_is_not_a_sweep_is_refused(tmp_path):
    storage = _open(tmp_path)
    optuna.create_study(study_name="abl", storage=storage)
    name, runs = sweep.load(_write(tmp_path / "abl.yaml", _spec()), root=tmp_path / "r")
    with pytest.raises(ValueError, match=r"study 'abl' in sqlite.* was not made by zolab"):
        st.prepare(storage, "abl", runs, tmp_path / "abl.yaml")


def test_run_directories_without_a_study_need_resume_or_overwrite(tmp_path):
    path = _write(tmp_path / "abl.yaml", _spec())
    (tmp_path / "r" / "abl" / "lr=0.01").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"1 run director\(y/ies\) exist .* --overwrite .* --resume"):
        _prepare(tmp_path, path)
    storage, study, _ = _prepare(tmp_path, path, resume=True)
    assert [t.user_attrs["resume"] for t in study.get_trials()] == [True, False]  # that run resumes, the other is new


def test_every_sweep_file_of_the_repository_becomes_a_study(tmp_path):
    """Each sweep file in experiments/ gives storable trials; the files sharing one name and runs folder (as
    experiments/minilm/grid.yaml and grid_sgd.yaml) become studies side by side."""
    import json
    from pathlib import Path

    made, shared = [], {"minilm_grid", "radazo_fig1"}
    for path in sorted(Path(REPO, "experiments").rglob("*.yaml")):
        if "grid" not in (yaml.safe_load(path.read_text()) or {}):
            continue
        try:
            name, runs = sweep.load(path, root=tmp_path / "r")
        except ValueError:  # a file it needs is made by an earlier job (the best step size of a grid)
            continue
        trials = [st._template(r, resume=False) for r in runs]
        assert [json.loads(json.dumps(t.user_attrs))["run_id"] for t in trials] == [r.run_id for r in runs]
        if name in shared:
            study = st.prepare(_open(tmp_path, name), st.study_name(name, path), runs, path, log=lambda line: None)
            assert [t.user_attrs["run_id"] for t in study.get_trials()] == [r.run_id for r in runs]
            made.append(study.study_name)
    assert "radazo_fig1/fig1" in made and {"minilm_grid/grid", "minilm_grid/grid_sgd"} <= set(made), made


def test_overwrite_deletes_the_study_and_the_run_directories(tmp_path):
    path = _write(tmp_path / "abl.yaml", _spec())
    storage, study, runs = _prepare(tmp_path, path)
    done = st.claim(study, storage, {"lr=0.01": 0})
    st.finish(study, storage, done, TrialState.COMPLETE, 1.0, {"status": "done"})
    runs[0].run_dir.mkdir(parents=True)
    (runs[0].run_dir / "events.out.tfevents.1").write_text("")
    storage, study, runs = _prepare(tmp_path, path, overwrite=True)
    assert not runs[0].run_dir.exists() and (tmp_path / "r" / "abl" / st.DB_FILE).exists()
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING] * 2


# ---------------------------------------------------------------- claims, heartbeats, lost workers
def test_concurrent_claims_take_each_trial_exactly_once(tmp_path):
    """SQLite does not lock rows: without BEGIN IMMEDIATE two workers claimed one trial (66 claims of 60 trials)."""
    storage = _open(tmp_path, "many")
    study = optuna.create_study(study_name="many", storage=storage)
    study.add_trials([optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"run_id": f"r{i}"})
                      for i in range(40)])
    order, got, errors = {f"r{i}": i for i in range(40)}, [], []

    def worker():
        try:
            while (trial := st.claim(study, storage, order)) is not None:
                got.append(trial.user_attrs["run_id"])
                study.tell(trial.number, 1.0)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(got) == sorted(order)


def test_a_trial_whose_worker_died_is_queued_again_and_resumes(tmp_path):
    storage, study, _ = _prepare(tmp_path, _write(tmp_path / "abl.yaml", _spec(lrs=(0.01, 0.02, 0.03))))
    order = {"lr=0.01": 0, "lr=0.02": 1, "lr=0.03": 2}
    first = st.claim(study, storage, order)
    assert first.user_attrs["run_id"] == "lr=0.01" and not st.is_retry(first)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage.set_trial_user_attr(first._trial_id, "worker", {"host": st.HOST, "pid": dead.pid, "trial": first.number})
    st.recover(study, storage)  # at once: the worker was a process of this machine that is gone
    assert storage.get_trial(first._trial_id).state == TrialState.FAIL
    again = st.claim(study, storage, order)
    assert again.user_attrs["run_id"] == "lr=0.01" and st.is_retry(again)  # grid order: before lr=0.02
    assert again.system_attrs["failed_trial"] == first.number
    other = st.claim(study, storage, order)
    storage.set_trial_user_attr(other._trial_id, "worker", {"host": "elsewhere", "pid": 1, "trial": other.number})
    unmarked = study.get_trials(states=(TrialState.WAITING,))[0]  # claimed by a worker killed before its heartbeat
    assert storage.set_trial_state_values(unmarked._trial_id, TrialState.RUNNING)
    st.recover(study, storage)
    with st.Heartbeat(storage, again._trial_id):  # a live worker's heartbeat keeps its trial
        time.sleep(5)  # the worker on another machine, silent past 3 heartbeats (1 s here; SQLite counts seconds)
        st.recover(study, storage)
    assert storage.get_trial(again._trial_id).state == TrialState.RUNNING
    assert storage.get_trial(other._trial_id).state == TrialState.FAIL
    assert storage.get_trial(unmarked._trial_id).user_attrs["status"] == "lost"
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["run_id"] for t in waiting] == ["lr=0.02", "lr=0.03"]


def test_resume_queues_failed_runs_again_not_finished_ones(tmp_path):
    storage, study, runs = _prepare(tmp_path, _write(tmp_path / "abl.yaml", _spec()))
    order = {"lr=0.01": 0, "lr=0.02": 1}
    a, b = st.claim(study, storage, order), st.claim(study, storage, order)
    st.finish(study, storage, a, TrialState.COMPLETE, float("nan"), {"status": "done", "metrics": {"val/loss": 1.0}})
    st.finish(study, storage, b, TrialState.FAIL, None, {"status": "interrupted", "error": "stopped by SIGINT"})
    assert study.trials[0].value == float("inf")  # a diverged run: NaN kept as +inf, the trial finished
    assert st.requeue(study, list(order)) == ["lr=0.02"]
    assert st.claim(study, storage, order).user_attrs["run_id"] == "lr=0.02"


# ---------------------------------------------------------------- metrics and the table
def test_final_metrics_take_each_tags_last_value_a_resumed_file_winning(tmp_path):
    run = tmp_path / "run"
    with SummaryWriter(str(run)) as w:
        for step, v in enumerate([5.0, 4.0, 3.0]):
            w.add_scalar("train/loss", v, step)
        w.add_scalar("val/loss", 3.5, 2)
        w.add_scalar("train/lr", 0.1, 2)
    time.sleep(0.01)
    with SummaryWriter(str(run), purge_step=2) as w:  # resumed from step 2
        w.add_scalar("train/loss", 2.5, 2)
        w.add_scalar("train/loss", 2.0, 3)
        w.add_scalar("test/acc", 0.75, 3)
    assert final_metrics(run) == {"test/acc": 0.75, "train/loss": 2.0, "val/loss": 3.5, "steps": 4}
    assert final_metrics(run, prefixes=("val/",)) == {"train/loss": 2.0, "val/loss": 3.5, "steps": 4}


def test_the_table_shows_grid_values_status_and_metrics(tmp_path):
    storage, study, runs = _prepare(tmp_path, _write(tmp_path / "abl.yaml", _spec()))
    order = {"lr=0.01": 0, "lr=0.02": 1}
    a = st.claim(study, storage, order)
    st.finish(study, storage, a, TrialState.COMPLETE, 0.5, {"status": "done", "error": "", "seconds": 1.25,
                                                            "metrics": {"train/loss": 0.25, "val/loss": 0.5,
                                                                        "train/forwards": 60.0, "steps": 30}})
    key = "model.optimizer.init_args.lr"
    text = table(rows(st.attempts(study), ["lr=0.01", "lr=0.02"], [key]), [key])
    assert text.splitlines()[0].split() == ["run", "lr", "status", "steps", "train/loss", "val/loss", "forwards",
                                            "seconds"]
    assert text.splitlines()[2].split() == ["lr=0.01", "0.01", "done", "30", "0.25", "0.5", "60", "1.2"]
    assert text.splitlines()[3].split() == ["lr=0.02", "0.02", "pending", "-", "-", "-", "-", "-"]
