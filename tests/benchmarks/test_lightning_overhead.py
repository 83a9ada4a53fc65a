"""benchmarks/lightning_overhead.py: a tiny run checks every path's parameters and prints the one-step-a-batch ratio."""

import re

from benchmarks import lightning_overhead


def test_a_tiny_run_prints_the_ratio_at_one_step_a_batch_and_a_profile(capsys):
    assert lightning_overhead.main(["--dim", "50", "--steps", "30", "--warmup", "10", "--repeats", "1",
                                    "--steps-per-batch", "5", "--profile", "5"]) == 0
    out = capsys.readouterr().out
    for row in ("plain", "zolab fit, 1 step a batch", "zolab fit, log every step", "zolab fit, 5 steps a batch"):
        assert re.search(rf"^{re.escape(row)} +[\d.]+ +[\d.]+ +[\d.]+x", out, re.M), row
    assert "same final parameters: yes" in out  # main raises when a path ends elsewhere
    assert re.search(r"^zolab fit at one ZO step a batch \([\d.]+ ms a plain step\): [\d.]+x the plain loop "
                     r"\(target <= 1\.2: (met|NOT met)\)$", out, re.M)
    floor = re.search(r"^a bare Lightning loop .*: ([\d.]+) ms a batch, so any fit through Lightning's loop costs "
                      r"at least ([\d.]+)x the plain loop at this step \(range ([\d.]+)-([\d.]+)x\)$", out, re.M)
    assert floor and float(floor[1]) > 0 and 1 < float(floor[3]) <= float(floor[2]) <= float(floor[4])
    share = re.search(r"the optimizer's step .*: ([\d.]+)%; everything else: ([\d.]+)%", out)
    assert share and abs(float(share[1]) + float(share[2]) - 100) < 0.2
    assert len(re.findall(r"^ +[\d.]+% +\d+  \S", out, re.M)) == 5  # --profile 5: five functions
