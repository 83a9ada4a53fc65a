"""MeZO-BCD: ZO-SGD on one block of the model per step (docs/algorithms.md §3.9)."""

from zolab.rules.zosgd import ZOSGD


class MeZOBCD(ZOSGD):
    """MeZO-BCD (Park et al., 2025, arXiv 2501.19099).

    Update, at step t with block B_t chosen by ``block_selection``::

        θ_{B_t} ← θ_{B_t} − η ĝ_{B_t},   θ elsewhere untouched

    Only B_t is perturbed and updated (2 forwards): no random numbers and no writes outside it, which is where
    the per-iteration speed-up over MeZO comes from. Weight decay touches only the active block. Blocks
    (default ``"module"``): one per transformer layer, the embeddings (a tied head included) as one, every
    other top-level module with trainable tensors as its own; or name regexes, or an int n of equal-size
    blocks. Selection **[open]**: ``"permutation"`` (default, a new random order each epoch over the blocks),
    ``"cyclic"``, ``"uniform"``. Pass ``model.named_parameters()``. Any other rule runs block-wise with the same
    ``blocks=...`` options (``blocks_per_step="all"`` for ZO-Bench's block-wise ZO).

    Args: lr (1e-3), mu (1e-3), weight_decay (0), blocks ("module"), block_selection ("permutation").
    """

    label = "MeZO-BCD"  # the name tables and figures print

    def __init__(self, params, lr=1e-3, mu=1e-3, weight_decay=0.0, blocks="module",
                 block_selection="permutation", **options):
        super().__init__(params, lr=lr, mu=mu, weight_decay=weight_decay, blocks=blocks,
                         block_selection=block_selection, **options)
