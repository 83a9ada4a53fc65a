"""LOZO's claims (Chen et al., ICLR 2025, arXiv 2410.07698; LZ1, LZ2 of docs/algorithms.md §5): readers and rows.

Both run on the CPU proxies (docs/algorithms.md §6): P-lr (a two-layer linear net whose gradient has rank 2 at the
start; its val/loss is the loss over the training inputs) and P-mlp (the digits MLP fine-tuned from digits 0–4).
"""

from __future__ import annotations

from zolab.claims.proxy_runs import best_lr, grid_value, group, not_worse, paired, tail_mean
from zolab.claims.stats import g, mean_std, pm
from zolab.claims.types import Claim, Job, Moved, Part, Result, Tolerance

LZ1_LR, LZ1_CELLS, LZ1_MLP, LZ2_LR = ("claims/lz1_lr.yaml", "claims/lz1_lr_cells.yaml", "claims/lz1_mlp.yaml",
                                      "claims/lz2_lr.yaml")
LOSS = {"P-lr": ("val/loss", 1), "P-mlp": ("train/loss", 10)}  # the loss at T: tag, mean of its last n values
LOSS_TEXT = {"P-lr": "final loss over the training inputs (val/loss)",
             "P-mlp": "final training loss (mean of the last 10 logged train/loss)"}


def loss_of(proxy: str):
    tag, n = LOSS[proxy]
    return lambda r: tail_mean(r, tag, n)


def loss_tolerance(reference: str, name: str, proxy: str) -> Tolerance:
    """The reference must lower its loss from its first logged value by more than 10% of it."""
    return Tolerance(reference, name, LOSS_TEXT[proxy], 0.1, relative=True)


def moved(ref_runs, proxy: str, seeds: int) -> Moved:
    tag = LOSS[proxy][0]
    start = mean_std([r.first(tag) for r in ref_runs])[0]
    return Moved({proxy: (start, [loss_of(proxy)(r) for r in ref_runs])}, seeds)


def compare(runs, proxy: str, rule: str, reference: str = "ZOSGD"):
    """(rule's runs, reference's runs), each at its best η of the shared grid (lowest mean loss at T); None when
    either is missing."""
    rules = group(runs, lambda r: r.hp.get("rule"))
    if rule not in rules or reference not in rules:
        return None
    (lr_a, a), (lr_b, b) = best_lr(rules[rule], loss_of(proxy)), best_lr(rules[reference], loss_of(proxy))
    return (lr_a, a), (lr_b, b)


# ------------------------------------------------------------------ LZ1: LOZO's loss falls faster than MeZO's
def read_lz1(proxy: str, sweep: str, cells: str | None):
    """holds: LOZO's loss at T below MeZO's in every seed and its test metric no worse; partly: the loss only."""
    higher = proxy == "P-mlp"
    test_tag, test_name = ("test/acc", "test accuracy") if higher else ("test/loss", "test loss (fresh inputs)")
    scale = 100.0 if higher else 1.0

    def read(runs) -> Result | None:
        found = compare(runs.of(sweep), proxy, "LOZO")
        if found is None:
            return None
        (lr_l, lozo), (lr_m, mezo) = found
        pairs = paired(lozo, mezo, loss_of(proxy))
        below = bool(pairs) and all(a < b for a, b in pairs)
        ok, diff, tol = not_worse([scale * r.last(test_tag) for r in lozo], [scale * r.last(test_tag) for r in mezo],
                                  higher, floor=1.0 if higher else 0.0)
        verdict = "holds" if below and ok else "partly" if below else "fails"
        number = (f"{LOSS_TEXT[proxy]}: LOZO {pm([a for a, _ in pairs])} (η = {g(lr_l)}) vs MeZO "
                  f"{pm([b for _, b in pairs])} (η = {g(lr_m)}), below in {sum(a < b for a, b in pairs)}/{len(pairs)} "
                  f"seeds; {test_name} LOZO − MeZO {diff:+.3g} (tolerance {tol:.3g})")
        detail = ""
        if cells:
            by_cell = group(runs.of(cells), lambda r: (int(grid_value(r, "model.optimizer.init_args.rank", 0)),
                                                       int(grid_value(r, "model.optimizer.init_args.nu", 0))))
            detail = "LOZO at η = 1e-3 by (r, ν): " + ", ".join(
                f"({r}, {nu}) {pm([loss_of(proxy)(x) for x in rs])}" for (r, nu), rs in sorted(by_cell.items()))
        return Result(verdict, number, detail, moved=moved(mezo, proxy, min(len(lozo), len(mezo))))

    return read


LZ1 = Claim(
    "LZ1", "LOZO lowers the training loss faster than MeZO at equal steps (equal forwards)",
    "README loss curves (OPT-13B SQuAD, OPT-30B SST-2, OPT-66B WiC); tables not read",
    "each rule at its best η of the shared grid {5e-4, 1e-3, 2e-3} (lowest mean loss at T = 4,000 steps), LOZO at "
    "r = 2, ν = 50: holds when LOZO's loss at T is below MeZO's in every seed and its test metric is no worse "
    "(P-mlp: accuracy ≥ MeZO's − max(1 point, seed std); P-lr: test loss ≤ MeZO's + the larger seed std); partly when "
    "only the loss; fails otherwise; the two proxies combine (all hold: holds, all fail: fails, else partly)",
    (Part("P-lr", "P-lr (W₂W₁x, rank-2 gradient, 12,288 numbers), batches of 64, 4,000 steps, μ = 1e-3, 3 seeds; "
                  "(r, ν) ∈ {1, 2, 4} × {50, 100} at η = 1e-3 reported", (Job(sweep=LZ1_LR), Job(sweep=LZ1_CELLS)),
          read_lz1("P-lr", LZ1_LR, LZ1_CELLS), hours=0.5, tolerance=loss_tolerance("ZOSGD", "MeZO", "P-lr")),
     Part("P-mlp", "P-mlp (digits MLP, 26,634 numbers, from a digits 0–4 pre-training), batches of 32, 4,000 steps, "
                   "μ = 1e-3, 3 seeds", (Job(sweep=LZ1_MLP),), read_lz1("P-mlp", LZ1_MLP, None), hours=0.5,
          tolerance=loss_tolerance("ZOSGD", "MeZO", "P-mlp"))))


# ------------------------------------------------------------------ LZ2: LOZO-M ≤ LOZO
def read_lz2(runs) -> Result | None:
    found = compare(runs.of(LZ1_LR), "P-lr", "LOZO")
    lozo_m = [r for r in runs.of(LZ2_LR) if r.hp.get("rule") == "LOZOM"]
    if found is None or not lozo_m:
        return None
    (lr, lozo), _ = found
    same = [r for r in lozo_m if float(r.hp["lr"]) == lr]
    pairs = paired(same, lozo, loss_of("P-lr"))
    if not pairs:
        return None
    every, on_mean = all(a <= b for a, b in pairs), mean_std([a for a, _ in pairs])[0] <= mean_std(
        [b for _, b in pairs])[0]
    verdict = "holds" if every else "partly" if on_mean else "fails"
    number = (f"{LOSS_TEXT['P-lr']} at LOZO's best η = {g(lr)}: LOZO-M {pm([a for a, _ in pairs])} vs LOZO "
              f"{pm([b for _, b in pairs])}, LOZO-M ≤ LOZO in {sum(a <= b for a, b in pairs)}/{len(pairs)} seeds")
    return Result(verdict, number, moved=moved(lozo, "P-lr", len(pairs)))


LZ2 = Claim(
    "LZ2", "LOZO-M's loss is no higher than LOZO's at the same η", "README and medium-model scripts (no number read)",
    "at LOZO's best η of LZ1's grid on P-lr: holds when LOZO-M's loss at T ≤ LOZO's in every seed, partly when on "
    "the mean over seeds only, fails otherwise",
    (Part("P-lr", "P-lr as LZ1, LOZO-M (r = 2, ν = 50, β1 = 0.9) on the same η grid and seeds",
          (Job(sweep=LZ1_LR), Job(sweep=LZ2_LR)), read_lz2, hours=0.25,
          tolerance=loss_tolerance("LOZO", "LOZO", "P-lr")),))

CLAIMS = (LZ1, LZ2)
