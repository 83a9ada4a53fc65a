"""zolab.engine.quantile: kthvalue of a concatenation, exactly, with a chunk of temporary memory."""

import pytest
import torch

from zolab.engine.quantile import kth_smallest
from zolab.lab.leaderboard_probe import PeakMemory


@pytest.mark.parametrize("absolute", [True, False])
def test_equals_kthvalue_of_the_concatenation_on_both_paths(absolute):
    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(5000, generator=gen), torch.randn(30, 40, generator=gen), torch.tensor([0.0, -0.0])]
    whole = torch.cat([p.reshape(-1) for p in parts])
    whole = whole.abs() if absolute else whole
    for k in (1, 2, 777, whole.numel() // 2, whole.numel()):
        want = whole.kthvalue(k).values
        for chunk in (1 << 20, 1000, 7):  # one kthvalue; bisection over chunks
            assert torch.equal(kth_smallest(parts, k, absolute=absolute, chunk=chunk), want), (k, chunk)


def test_temporary_memory_is_a_chunk_not_the_tensor():
    # 3M numbers (12 MB): |θ|, a concatenation and kthvalue's work copy would each be as large; the default
    # chunk (2^20) holds 4 MB of |θ| and a 1 MB comparison at a time
    theta = torch.randn(3_000_000, generator=torch.Generator().manual_seed(1))
    with PeakMemory([theta]) as tracker:
        value = kth_smallest([theta], 1_500_000)
    assert torch.equal(value, theta.abs().kthvalue(1_500_000).values)
    extra = tracker.peak - theta.untyped_storage().nbytes()
    assert 0 < extra <= 6 * 2**20, extra / 2**20
