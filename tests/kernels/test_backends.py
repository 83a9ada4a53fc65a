"""The engine's exactness tests on every kernel backend: the rule transcriptions and the exact-restore and
resume tests, re-run in a subprocess with ``ZOLAB_KERNELS`` forcing the torch implementation, and the
Triton kernels under ``TRITON_INTERPRET=1`` (the default run uses the C kernels)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each re-runs the rules' exactness tests in a subprocess (minutes on two cores): `make test-slow`; the default
# C kernels run them in `make test`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXACTNESS = ["tests/rules/test_transcription.py",
             "tests/rules/test_generic.py::test_lr_zero_leaves_parameters_bitwise_unchanged",
             "tests/rules/test_generic.py::test_closure_that_raises_propagates_and_restores",
             "tests/rules/test_generic.py::test_resume_from_state_dict_is_bitwise",
             "tests/rules/test_state_dtype.py::test_fused_update_is_the_float32_update_rounded_once",
             "tests/rules/test_state_dtype.py::test_resume_of_half_state_is_bitwise",
             "tests/engine/test_perturb.py::test_module_mode_gives_the_numbers_of_copy_mode"]


def start(env_extra: dict, tests: list[str], *options: str) -> subprocess.Popen:
    """The tests in a pytest subprocess, one thread, started at once: both backends' runs overlap, each on one
    of the machine's cores, instead of running one after the other."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests, *options],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs():
    """Both subprocesses, started together when the first test here asks (Triton's only if it is installed)."""
    procs = {"torch": start({"ZOLAB_KERNELS": "torch"}, EXACTNESS)}
    try:
        import triton  # noqa: F401
    except ImportError:
        pass
    else:
        # The interpreter runs a kernel in ~10 ms: each rule's transcription with its defaults and its own
        # variants (every rule's generated kernels), module mode, and half-precision state against torch's
        # bits. Restore does not depend on the kernels (the originals are never written): the torch run re-checks.
        procs["triton"] = start({"ZOLAB_KERNELS": "triton", "TRITON_INTERPRET": "1"},
                                ["tests/rules/test_transcription.py", EXACTNESS[-1],
                                 "tests/kernels/test_half_storage.py", "tests/rules/test_state_dtype.py"],
                                "-k", "common0 or variant or module_mode or triton or every_backend")
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=1200)
    return proc.returncode, out


def test_exactness_with_the_torch_kernels(runs):
    code, out = finish(runs["torch"])
    assert code == 0, out[-5000:]


def test_exactness_with_the_triton_kernels_interpreted(runs):
    if "triton" not in runs:
        pytest.skip("triton is not installed (it installs on Linux x86-64 only)")
    code, out = finish(runs["triton"])
    assert code == 0, out[-5000:]
