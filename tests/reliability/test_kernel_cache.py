"""No state of the kernel cache ($ZOLAB_CACHE) kills a run or costs it its C kernels.

Each test damages a cache that a first process filled, then runs a second process on it: a process, because
loading a bad shared library can kill the interpreter by a signal. The second process checks the C kernels and a
compiled program against the torch implementation bit for bit; the test asserts on its exit code and stderr.
"""

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Each test compiles C kernels in fresh processes (minutes on two cores): `make test-slow` runs them.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler")]

# The C library and a compiled program, each against the torch implementation.
CHECK = """
import torch
from zolab import kernels
from zolab.kernels import codegen
from tests.kernels.test_program import assert_same_bits, every_op_program, run_every_op

codegen.MIN_NUMEL = 0
assert kernels.backend(torch.zeros(3)) == "c", "the C kernels did not load"
a, b = torch.empty(5003), torch.empty(5003)
with kernels.use_backend("c"):
    kernels.fill(a, 12345, 7)
with kernels.use_backend("torch"):
    kernels.fill(b, 12345, 7)
assert torch.equal(a, b), "the C library drew other numbers"
program = every_op_program()
for x, y in zip(run_every_op("c", torch.float32, program, n=5003), run_every_op("torch", torch.float32, program, 5003)):
    assert_same_bits(x, y)
assert codegen._functions, "the program ran on the VM, not compiled"
print("same bits")
"""

# Another program, of eight inputs (called with the arguments of CHECK's program, its code reads past them).
OTHER = """
import torch
from zolab.kernels import codegen, program as P

tr = P.Tracer()
xs = [tr.input(f"x{k}") for k in range(8)]
tr.store("x0", sum(xs[1:], xs[0]) * tr.slot("g"))
assert codegen.compiled(tr.program, torch.float32, 0, force=True) is not None
"""

# A C compiler that logs each compile (not `--version`) before running the real one.
CC = """#!/bin/sh
case "$*" in *-shared*) echo "$*" >> "$(dirname "$0")/compiles.log" ;; esac
exec {cc} "$@"
"""


def _drop_root_override():
    """As root, give up reading and writing past file permissions (a read-only cache is read-only to root too):
    drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set before the exec."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="module")
def compiler(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cc")
    cc = folder / "cc"
    cc.write_text(CC.format(cc=shutil.which(os.environ.get("CC") or "cc")))
    cc.chmod(0o755)
    return cc


def _env(cache, compiler: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOLAB_")}
    env.update(ZOLAB_CACHE=str(cache), CC=str(compiler), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    return env


def run(code: str, cache, compiler: Path, cwd: Path = REPO, read_only: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_env(cache, compiler), capture_output=True,
                          text=True,
                          timeout=600, preexec_fn=_drop_root_override if read_only else None)


def compiles(compiler: Path) -> list[str]:
    log = compiler.with_name("compiles.log")
    return log.read_text().splitlines() if log.exists() else []


def assert_recovers(proc: subprocess.CompletedProcess, warnings: int, mentions: str = "") -> None:
    """Exit 0 with the torch implementation's bits, no traceback, ``warnings`` zolab warnings (naming ``mentions``)."""
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "same bits" in proc.stdout
    assert proc.stderr.count("UserWarning: zolab:") == warnings, proc.stderr[-3000:]
    assert mentions in proc.stderr, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def filled(tmp_path_factory, compiler) -> tuple[Path, Path, Path]:
    """A cache filled by CHECK, then by OTHER: (the cache, CHECK's program's library, OTHER's)."""
    cache = tmp_path_factory.mktemp("filled")
    proc = run(CHECK, cache, compiler)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = set(cache.glob("zo_prog_*.so"))
    proc = run(OTHER, cache, compiler)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (mine,), (other,) = ours, set(cache.glob("zo_prog_*.so")) - ours
    return cache, mine, other


def copy_of(filled, tmp_path: Path) -> tuple[Path, Path, Path]:
    cache, mine, other = filled
    shutil.copytree(cache, tmp_path / "cache")
    return tmp_path / "cache", tmp_path / "cache" / mine.name, tmp_path / "cache" / other.name


@pytest.mark.parametrize("kind", ["zo_cpu", "zo_prog"])
def test_a_truncated_cached_library_is_rebuilt_not_loaded(filled, tmp_path, compiler, kind):
    cache, mine, _ = copy_of(filled, tmp_path)
    (lib,) = cache.glob("zo_cpu_*.so") if kind == "zo_cpu" else [mine]
    data = lib.read_bytes()
    lib.write_bytes(data[: len(data) // 2])
    assert_recovers(run(CHECK, cache, compiler), warnings=1, mentions=lib.name)
    assert_recovers(run(CHECK, cache, compiler), warnings=0)  # rebuilt in place: the next run finds it whole


def test_another_programs_library_under_a_programs_name_is_not_run(filled, tmp_path, compiler):
    cache, mine, other = copy_of(filled, tmp_path)
    stem, alias = other.name[: -len(".so")], mine.name[: -len(".so")]
    for f in list(cache.iterdir()):  # the library with whatever the cache keeps beside it
        if f.name.startswith(stem):
            shutil.copy(f, cache / (alias + f.name[len(stem):]))
    assert_recovers(run(CHECK, cache, compiler), warnings=1, mentions=mine.name)


def test_a_cached_c_library_missing_a_symbol_is_rebuilt(filled, tmp_path, compiler):
    cache, _, _ = copy_of(filled, tmp_path)
    (lib,) = cache.glob("zo_cpu_*.so")
    stub = tmp_path / "stub.c"
    stub.write_text("int zo_axpz(void) { return 0; }\n")
    subprocess.run([shutil.which(os.environ.get("CC") or "cc"), "-shared", "-fPIC", str(stub), "-o", str(lib)],
                   check=True)
    assert_recovers(run(CHECK, cache, compiler), warnings=1, mentions=lib.name)


def test_an_empty_zolab_cache_compiles_into_a_private_dir_not_the_cwd(tmp_path, compiler):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert_recovers(run(CHECK, "", compiler, cwd=cwd), warnings=1, mentions="ZOLAB_CACHE")
    assert list(cwd.iterdir()) == []


def test_a_cache_path_that_is_a_file_falls_back_to_a_private_dir(tmp_path, compiler):
    (tmp_path / "cache").write_text("not a folder")
    assert_recovers(run(CHECK, tmp_path / "cache", compiler), warnings=1, mentions=str(tmp_path / "cache"))
    assert (tmp_path / "cache").read_text() == "not a folder"


def _read_only(folder: Path) -> dict:
    """Make ``folder`` and its files read-only; their names, sizes and modification times."""
    state = {}
    for f in [folder, *folder.rglob("*")]:
        state[f] = (f.stat().st_size, f.stat().st_mtime_ns)
        f.chmod(0o555 if f.is_dir() else 0o444)
    return state


def test_a_read_only_complete_cache_is_used_without_recompiling(filled, tmp_path, compiler):
    cache, _, _ = copy_of(filled, tmp_path)
    before, done = _read_only(cache), len(compiles(compiler))
    assert_recovers(run(CHECK, cache, compiler, read_only=True), warnings=0)
    assert compiles(compiler)[done:] == []
    assert {f: (f.stat().st_size, f.stat().st_mtime_ns) for f in [cache, *cache.rglob("*")]} == before


def test_a_read_only_empty_cache_compiles_into_a_private_dir_with_one_warning(tmp_path, compiler):
    (tmp_path / "cache").mkdir()
    _read_only(tmp_path / "cache")
    assert_recovers(run(CHECK, tmp_path / "cache", compiler, read_only=True), warnings=1,
                    mentions=str(tmp_path / "cache"))
    assert list((tmp_path / "cache").iterdir()) == []


def test_two_processes_filling_one_cache_at_once_both_load_it_quietly(tmp_path, compiler):
    env = _env(tmp_path / "cache", compiler)
    procs = [subprocess.Popen([sys.executable, "-c", CHECK], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert_recovers(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), warnings=0)
