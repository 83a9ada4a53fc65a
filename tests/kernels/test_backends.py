"""The engine's exactness tests on every kernel backend: the rule transcriptions and the exact-restore and
resume tests, re-run in a subprocess with ``ZOLAB_KERNELS`` forcing the torch implementation, and the
Triton kernels under ``TRITON_INTERPRET=1`` (the default run uses the C kernels)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXACTNESS = ["tests/rules/test_transcription.py",
             "tests/rules/test_generic.py::test_lr_zero_leaves_parameters_bitwise_unchanged",
             "tests/rules/test_generic.py::test_closure_that_raises_propagates_and_restores",
             "tests/rules/test_generic.py::test_resume_from_state_dict_is_bitwise",
             "tests/test_perturb.py::test_module_mode_gives_the_numbers_of_copy_mode"]


def run_with(env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *EXACTNESS],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


def test_exactness_with_the_torch_kernels():
    proc = run_with({"ZOLAB_KERNELS": "torch"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_exactness_with_the_triton_kernels_interpreted():
    pytest.importorskip("triton", reason="triton is not installed (it installs on Linux x86-64 only)")
    # The interpreter runs a kernel in ~10 ms: each rule's transcription with its defaults and its own
    # variants (every rule's generated kernels), and module mode. Restore does not depend on the kernels (the
    # originals are never written), which the torch run above re-checks.
    env = {**os.environ, "ZOLAB_KERNELS": "triton", "TRITON_INTERPRET": "1"}
    tests = ["tests/rules/test_transcription.py", EXACTNESS[-1]]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests,
                           "-k", "common0 or variant or module_mode"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
