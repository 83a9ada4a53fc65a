"""Blocks of parameters for block-coordinate ZO (MeZO-BCD, docs/algorithms.md §3.9) and their selection.

A block is a list of tensor positions (indices into the optimizer's flattened parameter list). Any rule
can run block-wise: the optimizer perturbs and updates only the active block(s) of a step. ``BlockPlan``
holds an optimizer's block options and answers which tensors step t perturbs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from zolab.engine.checks import check_choice
from zolab.engine.seeds import mix

SELECTIONS = ("cyclic", "permutation", "uniform", "uniform_subset")
GRANULARITIES = ("model", "tensor")
_EMBEDDING_HINTS = ("embed", "wte", "wpe", "word_embeddings", "position_embeddings", "shared")


def module_block(name: str) -> str:
    """Block key of a parameter name: its transformer layer, the embeddings, or its own top-level module.

    ``model.layers.3.mlp.up_proj.weight`` -> ``model.layers.3``; ``model.embed_tokens.weight`` ->
    ``embeddings``; ``model.norm.weight`` -> ``model.norm``; ``x`` -> ``x``. A tied head is not listed
    separately by ``named_parameters()``, so it stays with the embedding block.
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    if any(h in p for p in parts[:-1] or parts for h in _EMBEDDING_HINTS):
        return "embeddings"
    return ".".join(parts[:-1]) or parts[0]


def partition(names: Sequence[str], numels: Sequence[int], spec) -> list[tuple[str, list[int]]]:
    """Split tensors into ordered, disjoint, covering blocks.

    ``spec``: ``None`` (one block), ``"module"``, ``"tensor"`` (one block per tensor), an int n (n blocks of
    consecutive tensors with near-equal element counts), or a list of name regexes (block i holds the
    tensors whose name matches regex i; every tensor must match exactly one).
    """
    n = len(names)
    if spec is None:
        return [("all", list(range(n)))]
    if spec == "tensor":
        return [(names[i], [i]) for i in range(n)]
    if spec == "module":
        keyed: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            keyed.setdefault(module_block(name), []).append(i)
        return list(keyed.items())
    if isinstance(spec, bool) or not isinstance(spec, (int, str, list, tuple)):
        raise ValueError(f"blocks={spec!r} not understood; allowed: None, 'module', 'tensor', an int, regexes")
    if isinstance(spec, int):
        if not 1 <= spec <= n:
            raise ValueError(f"blocks={spec}: the number of equal blocks must be in [1, {n}] (tensor count)")
        total, out, acc = sum(numels), [], 0
        for i in range(n):
            middle = acc + numels[i] / 2
            acc += numels[i]
            j = min(spec - 1, int(middle * spec / total))  # the block its middle falls in
            j = max(j, len(out) - 1, spec - (n - i))  # monotone, and leave a tensor for each later block
            j = min(j, len(out))  # no empty block in between
            if j == len(out):
                out.append((f"block{j}", []))
            out[j][1].append(i)
        return out
    if isinstance(spec, str):
        raise ValueError(f"blocks={spec!r} unknown; allowed: None, 'module', 'tensor', an int, a list of regexes")
    if not spec or not all(isinstance(p, str) for p in spec):
        raise ValueError(f"blocks={spec!r}: a list of regexes must be non-empty strings")
    patterns = []
    for p in spec:
        try:
            patterns.append(re.compile(p))
        except re.error as err:
            raise ValueError(f"blocks: regex {p!r} is invalid ({err}); allowed: Python regular expressions") from None
    blocks: list[tuple[str, list[int]]] = [(p.pattern, []) for p in patterns]
    for i, name in enumerate(names):
        hits = [j for j, p in enumerate(patterns) if p.search(name)]
        if not hits:
            raise ValueError(f"blocks: parameter {name!r} matches none of the regexes {list(spec)}")
        if len(hits) > 1:
            raise ValueError(
                f"blocks: parameter {name!r} matches several regexes {[spec[j] for j in hits]}; "
                "each parameter must belong to exactly one block"
            )
        blocks[hits[0]][1].append(i)
    empty = [b for b, idx in blocks if not idx]
    if empty:
        raise ValueError(f"blocks: the regexes {empty} match no trainable parameter")
    return blocks


def select(t: int, num_blocks: int, selection: str, seed: int) -> int:
    """The block of step t (1-based): a pure function of (t, seed), so resumed runs continue exactly."""
    if selection == "cyclic":
        return (t - 1) % num_blocks
    if selection == "permutation":
        epoch, pos = divmod(t - 1, num_blocks)
        order = list(range(num_blocks))
        random.Random(mix(seed, 0xB10C, epoch)).shuffle(order)
        return order[pos]
    if selection == "uniform":
        return random.Random(mix(seed, 0x0F1D, t)).randrange(num_blocks)
    if selection == "uniform_subset":
        return subset(t, num_blocks, 1, seed)[0]
    raise ValueError(f"unknown block_selection {selection!r}; allowed: {list(SELECTIONS)}")


def subset(t: int, num_blocks: int, k: int, seed: int) -> list[int]:
    """The k blocks of step t (``uniform_subset``), drawn without replacement, in model order (pure in t, seed)."""
    return sorted(random.Random(mix(seed, 0x5B5E7, t)).sample(range(num_blocks), k))


class BlockPlan:
    """An optimizer's block options (``blocks``, ``block_selection``, ``blocks_per_step``, ``granularity``; see
    ``ZOOptimizer``), checked, and the blocks of a step: ``partition`` splits the trainable tensors,
    ``of_step`` picks the block(s) step t perturbs and updates."""

    def __init__(self, spec=None, selection: str = "permutation", per_step: int | str = 1,
                 granularity: str = "model"):
        check_choice("block_selection", selection, SELECTIONS)
        check_choice("granularity", granularity, GRANULARITIES)
        several = isinstance(per_step, int) and not isinstance(per_step, bool) and per_step >= 2
        if per_step not in (1, "all") and not several:
            raise ValueError(f"invalid blocks_per_step {per_step!r}; allowed: 1, 'all' or an integer k >= 2 "
                             "(with block_selection='uniform_subset')")
        if several != (selection == "uniform_subset") and per_step != 1:
            raise ValueError(f"blocks_per_step={per_step!r} with block_selection={selection!r}; allowed: an integer "
                             "k >= 2 together with 'uniform_subset' (k blocks estimated jointly)")
        if granularity == "tensor":
            if spec is not None:
                raise ValueError(f"granularity='tensor' makes each tensor a block; got blocks={spec!r} too")
            spec, per_step, selection = "tensor", "all", "cyclic"
        self.spec, self.selection, self.per_step, self.granularity = spec, selection, per_step, granularity

    def partition(self, refs: list, named: bool) -> list[tuple[str, list]]:
        """The ordered blocks of ``refs`` (objects with ``name`` and ``numel``); ``named``: the user gave names."""
        if not refs:
            raise ValueError("no trainable parameter (all have requires_grad=False)")
        if self.spec not in (None, "tensor") and not named and not isinstance(self.spec, int):
            raise ValueError(f"blocks={self.spec!r} needs parameter names: pass model.named_parameters()")
        parts = partition([r.name for r in refs], [r.numel for r in refs], self.spec)
        if isinstance(self.per_step, int) and self.per_step > len(parts):
            raise ValueError(f"blocks_per_step={self.per_step} but blocks={self.spec!r} makes {len(parts)} blocks; "
                             f"allowed: an integer in [1, {len(parts)}]")
        return [(name, [refs[i] for i in idx]) for name, idx in parts]

    def of_step(self, parts: list, t: int, seed: int) -> list:
        """The block(s) of ``parts`` that step t perturbs and updates (a pure function of t and the seed); k >= 2
        blocks of ``uniform_subset`` are one block (named ``a+b+...``), perturbed and updated jointly."""
        if self.per_step == "all" or len(parts) == 1:
            return parts
        if self.per_step == 1:
            return [parts[select(t, len(parts), self.selection, seed)]]
        chosen = [parts[i] for i in subset(t, len(parts), self.per_step, seed)]
        return [("+".join(name for name, _ in chosen), [r for _, refs in chosen for r in refs])]
