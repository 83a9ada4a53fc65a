"""Sparse-MeZO (docs/algorithms.md §3.15): the thresholds keep ⌈(1 − s)·numel⌉ entries of each tensor at θ₀, the
same mask (from the unperturbed θ) serves +μ, −μ and the update in copy and module mode, and the options (scope,
signed and random masks, 1-D tensors, refresh) do what they say."""

import functools
import math

import pytest
import torch
from torch import nn

from zolab import SparseMeZO
from zolab.engine.quantile import kth_smallest


class Layers(nn.Module):
    """Two 'transformer layers' (names layers.0.*, layers.1.*) and an embedding; every tensor read in its module."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(30, 8).double()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)).double()
                                    for _ in range(2))
        self.norm = nn.LayerNorm(8).double()
        with torch.no_grad():  # trained-looking norm tensors (ones and zeros tie at h: every entry is in the mask)
            self.norm.weight.normal_(1.0, 0.1)
            self.norm.bias.normal_()
        self.register_buffer("ids", torch.randint(0, 30, (16,)))

    def loss(self):
        h = self.emb(self.ids)
        for layer in self.layers:
            h = h + layer(h)
        return (self.norm(h) - 0.5).square().mean()


def masks(opt, net):
    return {n: opt.state[p]["h"] for n, p in net.named_parameters()}


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.95])
def test_the_mask_keeps_the_ceiling_of_one_minus_s_times_numel_entries_per_tensor(sparsity):
    net = Layers()
    opt = SparseMeZO(list(net.named_parameters()), sparsity=sparsity)
    for name, p in net.named_parameters():
        h = opt.state[p]["h"]
        assert h.shape == () and h.dtype == torch.float64
        k = math.ceil(round((1 - sparsity) * p.numel(), 6))
        assert int((p.abs() <= h).sum()) == k, name
        assert h == p.detach().abs().flatten().kthvalue(k).values


def _recording_closure(net, seen):
    def closure():
        seen.append({n: p.detach().clone() for n, p in net.named_parameters()})
        return net.loss()

    return closure


def test_one_mask_serves_both_points_and_the_update():
    """The points θ ± μ m⊙z and the update θ − η p m⊙z move exactly the entries with |θ_t| ≤ h, at every step, also
    after entries have outgrown h (the mask is of the unperturbed θ)."""
    net = Layers()
    opt = SparseMeZO(list(net.named_parameters()), lr=0.5, mu=1e-2, perturb="copy")
    h, kept = masks(opt, net), []  # kept: the fraction of each tensor in the mask, per step
    for _ in range(4):
        theta = {n: p.detach().clone() for n, p in net.named_parameters()}
        seen = []
        opt.step(_recording_closure(net, seen))
        plus, minus = seen
        kept.append({})
        for name, p in net.named_parameters():
            mask = theta[name].abs() <= h[name]
            kept[-1][name] = float(mask.double().mean())
            for moved in (plus[name] - theta[name], theta[name] - minus[name], theta[name] - p.detach()):
                assert torch.equal(moved != 0, mask), name
    assert all(0 < f <= 0.25 for f in kept[0].values())  # ⌈0.2·numel⌉ entries at θ₀
    assert all(0 < step["emb.weight"] < kept[0]["emb.weight"] for step in kept[1:])  # entries that outgrow h leave


@pytest.mark.parametrize("chunk_numel", [1 << 21, 16])
def test_module_mode_steps_as_copy_mode(chunk_numel):
    """Module mode builds m⊙z inside each module (embedding rows, Linear row chunks below ``chunk_numel``): copy
    mode's run, bitwise unless a Linear goes in chunks (whose products may round differently)."""
    runs = []
    for perturb in ("copy", "module"):
        net = Layers()
        opt = SparseMeZO(list(net.named_parameters()), lr=0.5, mu=1e-2, perturb=perturb, chunk_numel=chunk_numel)
        opt.bind(net)
        for _ in range(4):
            opt.step(net.loss)
        assert opt.perturb_mode == perturb
        runs.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*runs):
        if chunk_numel > 64:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_module_scope_shares_one_threshold_per_layer_and_keeps_1d_tensors_apart():
    net = Layers()
    opt = SparseMeZO(list(net.named_parameters()), sparsity=0.5, mask_scope="module")
    h = masks(opt, net)
    for i in range(2):
        mats = [p for n, p in net.named_parameters() if n.startswith(f"layers.{i}.") and p.ndim == 2]
        k = math.ceil(0.5 * sum(p.numel() for p in mats))
        assert h[f"layers.{i}.0.weight"] == h[f"layers.{i}.2.weight"] == kth_smallest(mats, k)
        assert h[f"layers.{i}.0.bias"] == net.layers[i][0].bias.detach().abs().kthvalue(4).values
    assert h["layers.0.0.weight"] != h["layers.1.0.weight"]


def test_signed_random_and_1d_options():
    net = Layers()
    signed = masks(SparseMeZO(list(net.named_parameters()), sparsity=0.75, mask_on="signed"), net)
    assert signed["emb.weight"] == net.emb.weight.detach().flatten().kthvalue(60).values < 0
    for option, value in (("dense", math.inf), ("frozen", -math.inf)):
        h = masks(SparseMeZO(list(net.named_parameters()), mask_1d=option), net)
        assert h["norm.bias"] == h["layers.0.0.bias"] == value and math.isfinite(h["emb.weight"])
    # random (R-MeZO): |z'| ≤ Φ⁻¹(1 − s/2), a fresh mask each step, moving 1 − s of the entries on average
    x = nn.Parameter(torch.zeros(20000, dtype=torch.float64))
    opt = SparseMeZO([x], lr=1.0, mu=1e-3, sparsity=0.8, mask_on="random")
    fractions, previous = [], None
    for _ in range(3):
        before = x.detach().clone()
        opt.step(lambda: (x - 1).square().sum())
        moved = x.detach() != before
        fractions.append(moved.double().mean().item())
        assert previous is None or not torch.equal(moved, previous)
        previous = moved
    assert fractions == pytest.approx([0.2] * 3, abs=0.01)


def test_threshold_refresh_recomputes_from_theta_and_is_put_back_when_the_step_raises():
    net = Layers()
    opt = SparseMeZO(list(net.named_parameters()), lr=0.5, mu=1e-2, threshold_refresh=2)
    first = {n: v.clone() for n, v in masks(opt, net).items()}
    opt.step(net.loss)
    opt.step(net.loss)
    assert masks(opt, net) == first  # steps 1 and 2 use θ₀'s
    with pytest.raises(RuntimeError, match="boom"):
        opt.step(lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert masks(opt, net) == first and opt.zo["step"] == 2
    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt.step(net.loss)  # step 3: from θ₂
    for n, v in masks(opt, net).items():
        k = math.ceil(round(0.2 * theta[n].numel(), 6))
        assert v == theta[n].abs().flatten().kthvalue(k).values and v != first[n], n


def test_a_group_added_later_gets_its_thresholds_and_they_are_saved():
    net = Layers()
    opt = SparseMeZO([p for n, p in net.named_parameters() if n.startswith("emb")])
    opt.add_param_group({"params": list(net.norm.parameters())})
    expected = net.norm.weight.detach().abs().kthvalue(2).values
    opt.step(net.loss)
    assert opt.state[net.norm.weight]["h"] == expected
    saved = opt.state_dict()["state"]
    assert all(saved[i]["h"].shape == () for i in saved) and len(saved) == 3


def test_large_tensors_take_the_chunked_threshold(monkeypatch):
    """Beyond a chunk the threshold is found by bisection over the values' keys: the same number as kthvalue."""
    import zolab.rules.sparse_mezo as module

    x = nn.Parameter(torch.randn(3000, dtype=torch.float32))
    direct = SparseMeZO([x]).state[x]["h"]
    monkeypatch.setattr(module, "kth_smallest", functools.partial(kth_smallest, chunk=100))
    chunked = SparseMeZO([x]).state[x]["h"]
    assert chunked == direct == x.detach().abs().kthvalue(600).values and chunked.dtype == torch.float32


def test_a_shard_of_a_larger_tensor_is_refused_unless_the_mask_is_random():
    """The threshold is the k-th magnitude of the whole tensor, which a process holding rows of it cannot know."""
    w = torch.nn.Parameter(torch.randn(4, 3))
    group = [{"params": [("w", w)], "shards": [(0, 24)]}]  # rows 0-3 of an 8 × 3 tensor
    with pytest.raises(ValueError, match=r"\['w'\] are shards of larger tensors; allowed: whole tensors"):
        SparseMeZO(group)
    SparseMeZO([{"params": [("w", w)], "shards": [(0, 24)]}], mask_on="random")  # no values read: allowed
