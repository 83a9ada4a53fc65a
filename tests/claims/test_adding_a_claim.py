"""README's "Adding a claim", done on a copy of the package: the claim's row and reader in its paper's file and
its sweep file under experiments/ are all it takes for the scoreboard, ``--run``, the page and the registry-driven
tests to carry it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zolab.claims.registry import CLAIMS

ROOT = Path(__file__).resolve().parents[2]

CLAIM = '''

# ------------------------------------------------------------------ A3: added by tests/claims/test_adding_a_claim.py
A3_SWEEP = "claims/a3_lr.yaml"


def read_a3(runs) -> Result | None:
    finals = {float(r.hp["lr"]): r.last("train/loss") for r in runs.of(A3_SWEEP)}
    if not finals:
        return None
    best = min(finals, key=finals.get)
    return Result("holds" if best == max(finals) else "fails", f"lowest final loss at lr {best:g} of {sorted(finals)}")


A3 = Claim("A3", "ZO-AdaMU does best at its largest step size", "an example, no paper number",
           "holds when the largest lr ends lowest, fails otherwise",
           (Part("mlp", "A2's MLP, 3 step sizes", (Job(sweep=A3_SWEEP),), read_a3),))
CLAIMS = (*CLAIMS, A3)
'''
SWEEP = """name: claims_a3_lr
base: ../ablations/adamu_base.yaml
grid:
  model.optimizer.init_args.lr: [1.0e-3, 1.0e-2, 3.0e-2]
"""
RUNS = """
from pathlib import Path
from tests.claims.fake_runs import complete_sweep
lr = lambda r: r.values["model.optimizer.init_args.lr"]
complete_sweep(Path("runs"), "claims/a3_lr.yaml", lambda r: ({"lr": lr(r)}, {"train/loss": [2.0, 1.0 / lr(r)]}))
"""


@pytest.mark.slow
def test_a_claim_added_as_readme_says_shows_everywhere(tmp_path):
    copy = tmp_path / "repo"
    for folder in ("zolab", "experiments", "tests"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", "figures"))
    paper = copy / "zolab" / "claims" / "adamu.py"
    paper.write_text(paper.read_text() + CLAIM)
    (copy / "experiments" / "claims" / "a3_lr.yaml").write_text(SWEEP)

    def run(*argv):
        proc = subprocess.run([sys.executable, *argv], cwd=copy, capture_output=True, text=True, timeout=900,
                              env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    out = run("-m", "zolab.claims")
    assert "A3   NOT RUN  ZO-AdaMU does best at its largest step size" in out and f"{len(CLAIMS) + 1} not run" in out
    assert "would run: zolab sweep experiments/claims/a3_lr.yaml --root=runs --resume" in run(
        "-m", "zolab.claims", "A3", "--run", "--dry-run")
    run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/claims/test_claims.py", "-k", "without_runs")
    run("-c", RUNS)
    out = run("-m", "zolab.claims", "A3", "--write", "docs/claims.md")
    assert "A3   HOLDS" in out and "[mlp] holds: lowest final loss at lr 0.03 of [0.001, 0.01, 0.03]" in out
    assert "## A3" in (copy / "docs" / "claims.md").read_text()
