"""benchmarks/gpu_check.sh on a machine without CUDA: it exits 0, skips the CUDA parts with the reason, and the
bitwise check's CPU side passes; a failing part makes it exit 1."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("timeout")), reason="needs bash, timeout")


def run(tmp_path, **env):
    env = {**os.environ, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": "", "GPU_CHECK_STEPS": "2",
           "GPU_CHECK_TIMEOUT": "900", "GPU_CHECK_PYTHON": sys.executable, **env}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    rows = {}
    for line in (tmp_path / "summary.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("part", "---"):
            rows[cells[0]] = cells[1:]
    return proc, rows


@pytest.mark.slow
def test_on_the_cpu_the_cuda_parts_are_skipped_with_the_reason_and_the_cpu_checks_pass(tmp_path):
    proc, rows = run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(rows) == ["env", "cuda-tests", "bitwise", "step-cost-smollm2", "step-cost-opt-1.3b"]
    assert rows["env"][0] == "PASS" and rows["bitwise"][0] == "PASS"
    for part in ("cuda-tests", "step-cost-smollm2", "step-cost-opt-1.3b"):
        status, _, reason = rows[part]
        assert status == "SKIP" and "no CUDA device" in reason
    assert "GPU check summary" in proc.stdout
    report = json.loads((tmp_path / "bitwise.json").read_text())
    assert report["cuda"] is False and "no CUDA device" in report["reason"]
    cpu = [c for c in report["checks"] if "cuda" not in c["name"]]
    cuda = [c for c in report["checks"] if "cuda" in c["name"]]
    assert {c["name"] for c in cpu} == {"draws cpu c = reference", "draws cpu c = torch",
                                        "steps cpu mlp: c twice, c = torch", "steps cpu llama: c twice, c = torch"}
    assert all(c["status"] == "pass" for c in cpu), cpu
    assert len(cuda) == 10 and all(c["status"] == "skip" and c["detail"] == report["reason"] for c in cuda)


def test_a_failing_part_fails_the_check(tmp_path):
    proc, rows = run(tmp_path, GPU_CHECK_PYTHON="false")  # every python part exits 1
    assert proc.returncode == 1
    assert rows["env"][0] == "FAIL (exit 1)" and rows["bitwise"][0] == "FAIL (exit 1)"


def test_a_difference_is_a_failure():
    gpu_check.results.clear()
    a = {("gaussian", torch.float32, 0, "fill"): torch.zeros(3)}
    gpu_check.compare("same", a, {k: v.clone() for k, v in a.items()}, "fills")
    gpu_check.compare("other", a, {k: v + torch.tensor([0.0, 0.0, 1e-7]) for k, v in a.items()}, "x")
    assert [r["status"] for r in gpu_check.results] == ["pass", "fail"]
    gpu_check.results.clear()
