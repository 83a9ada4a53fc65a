"""The registry: every claim, from its paper's file (``PAPERS``, in the scoreboard's order), and selecting them.

Adding a claim to a paper adds its row (and readers) to that paper's file; a new paper adds its file here.
"""

from __future__ import annotations

from importlib import import_module

from zolab.claims.types import Claim, Part

PAPERS = ("radazo", "adamu", "mezo_bcd", "meazo", "mezo")  # zolab/claims/<paper>.py, each with CLAIMS
PAPERS += ("lozo", "subzero", "mezo_svrg")  # LOZO, SubZero, MeZO-SVRG (CPU proxies)
PAPERS += ("hizoo", "sparse_mezo", "forward_grad")  # HiZOO, Sparse-MeZO, Forward-Grad (CPU proxies)
PAPERS += ("zo_bench", "fzoo", "lezo")  # ZA1 and CS1, FZ1, LE1
CLAIMS: tuple[Claim, ...] = tuple(c for p in PAPERS for c in import_module(f"zolab.claims.{p}").CLAIMS)


def claim_by_id(ident: str) -> Claim:
    for c in CLAIMS:
        if c.id == ident.upper():
            return c
    raise ValueError(f"unknown claim {ident!r}; allowed: {[c.id for c in CLAIMS]} (or ID.part)")


def select(tokens: list[str]) -> list[tuple[Claim, list[Part]]]:
    """Claims and parts named by ``ID`` (all its parts) or ``ID.part``; every claim when none."""
    if not tokens:
        return [(c, list(c.parts)) for c in CLAIMS]
    out: dict[str, tuple[Claim, list[Part]]] = {}
    for token in tokens:
        ident, _, name = token.partition(".")
        claim = claim_by_id(ident)
        parts = [p for p in claim.parts if not name or p.name == name]
        if not parts:
            raise ValueError(f"{claim.id} has no part {name!r}; its parts: {[p.name for p in claim.parts]}")
        entry = out.setdefault(claim.id, (claim, []))
        entry[1].extend(p for p in parts if p not in entry[1])
    return list(out.values())


def sweep_files() -> list[str]:
    """Every sweep file the registry names that no job writes, and the leaderboard protocols its testbed parts
    read (the experiments folder must hold them)."""
    jobs = [j for c in CLAIMS for p in c.parts for j in p.jobs]
    written = {j.output for j in jobs if j.in_experiments}
    protocols = {f"leaderboard/{j.dynamic.testbed}.yaml" for j in jobs if j.dynamic is not None}
    return sorted({j.sweep for j in jobs if j.sweep and j.sweep not in written} | protocols)
