"""Run directories (zolab/lab/rundir.py): one-directory names, paths that stay inside the root, checkpoints read
with weights_only and named when damaged, the newest loadable checkpoint, atomic saves, one process per run."""

import os
import time

import pytest
import torch

from zolab.lab.rundir import (
    AtomicCheckpointIO,
    CheckpointError,
    RunLock,
    check_name,
    checkpoint_files,
    inside,
    newest_checkpoint,
    read_checkpoint,
)


def _checkpoint(path, step: int, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"x": torch.ones(2)}, "global_step": step, "loops": {}, "optimizer_states": [],
                **extra}, path)
    return path


@pytest.mark.parametrize("name", ["run", "lr=0.01-seed=0", "betas=0.9,0.99", "a.b", "_.."])
def test_a_single_directory_name_is_accepted_as_it_is(name):
    assert check_name("--name", name) == name


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "/abs", "nul\0byte"])
def test_names_that_are_not_one_directory_are_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match=r"--version=.* is not a directory name; allowed: one name without '/'"):
        check_name("--version", bad)


def test_a_name_longer_than_a_directory_name_may_be_is_refused():
    assert check_name("--name", "a" * 255) == "a" * 255
    with pytest.raises(ValueError, match=r"--name='a+'\.\.\. is 256 bytes; allowed: at most 255"):
        check_name("--name", "a" * 256)
    with pytest.raises(ValueError, match=r"is 256 bytes"):
        check_name("--name", "é" * 128)  # bytes, not characters


def test_inside_accepts_paths_below_the_root_and_refuses_the_root_itself_and_links_out(tmp_path):
    root = tmp_path / "runs"
    (root / "a").mkdir(parents=True)
    assert inside(root / "a" / "v", root) == root / "a" / "v"
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "link")
    for path in (root, root / "..", root / "link" / "v"):
        with pytest.raises(ValueError, match="outside the runs root"):
            inside(path, root)


def test_read_checkpoint_returns_the_checkpoint_and_names_each_kind_of_damage(tmp_path):
    good = _checkpoint(tmp_path / "good.ckpt", 7)
    assert read_checkpoint(good)["global_step"] == 7
    assert read_checkpoint(good, keys=("global_step",))["global_step"] == 7
    cases = {
        tmp_path / "missing.ckpt": r"missing\.ckpt: no such file",
        tmp_path / "empty.ckpt": r"empty\.ckpt: empty file \(0 bytes\)",
        tmp_path / "half.ckpt": r"half\.ckpt: not loadable with weights_only=True",
        tmp_path / "other.ckpt": r"other\.ckpt: not a Lightning training checkpoint \(missing \['state_dict'",
    }
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "half.ckpt").write_bytes(good.read_bytes()[:100])
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.ckpt")
    for path, match in cases.items():
        with pytest.raises(CheckpointError, match=match):
            read_checkpoint(path)


def test_checkpoint_files_lists_the_run_checkpoints_without_partial_files(tmp_path):
    assert checkpoint_files(tmp_path / "none") == []
    folder = tmp_path / "checkpoints"
    for name in ("b.ckpt", "a.ckpt", ".a.ckpt.123.part", "notes.txt"):
        _checkpoint(folder / name, 1)
    (folder / "dir.ckpt").mkdir()
    assert [p.name for p in checkpoint_files(tmp_path)] == ["a.ckpt", "b.ckpt"]


def test_newest_checkpoint_takes_the_highest_step_then_the_newest_file_and_reports_the_damaged(tmp_path):
    folder = tmp_path / "checkpoints"
    assert newest_checkpoint(tmp_path) == (None, -1, [])
    _checkpoint(folder / "epoch=0-step=6.ckpt", 6)
    _checkpoint(folder / "on_exception.ckpt", 9)
    (folder / "zz.ckpt").write_bytes(b"garbage")
    path, step, bad = newest_checkpoint(tmp_path)
    assert (path.name, step) == ("on_exception.ckpt", 9)
    assert len(bad) == 1 and "zz.ckpt" in bad[0]
    later = _checkpoint(folder / "again.ckpt", 9)
    stamp = time.time_ns() + 10**9
    os.utime(later, ns=(stamp, stamp))
    assert newest_checkpoint(tmp_path)[0] == later  # equal steps: the newer file


def test_atomic_checkpoint_io_replaces_the_file_whole_and_leaves_no_partial_file(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "run" / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "x": torch.zeros(3)}, path)
    io.save_checkpoint({"global_step": 2, "x": torch.ones(3)}, path)
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == 2 and torch.equal(saved["x"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    with pytest.raises(TypeError, match="takes no storage_options"):
        io.save_checkpoint({"global_step": 3}, path, storage_options={"x": 1})


def test_run_lock_admits_one_holder_at_a_time_and_names_it(tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    try:
        with pytest.raises(ValueError, match=rf"in use by zolab process {os.getpid()}: two processes cannot write"):
            RunLock(tmp_path / "run").acquire()
    finally:
        first.release()
    second = RunLock(tmp_path / "run").acquire()  # released: free again
    second.release()
    second.release()  # releasing twice is harmless
