"""Low-rank directions (LOZO's U Vᵀ, SubZero's √(mn)/r · U Z Vᵀ): their factors against direct transcriptions,
orthonormal bases, the dense Gaussian's expected norm, V kept for ν steps with probe and update agreeing on a
refresh step, module mode against copy mode, and an SGD step written in place without a dense direction."""

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import zolab
from zolab import kernels
from zolab.engine.estimator import Query
from zolab.engine.groups import ParamRef
from zolab.engine.lowrank import BASIS_STREAM, V_STREAM, LowRank, Subspace
from zolab.engine.seeds import mix


def ref_of(shape, index=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(index)
    return ParamRef(index, torch.randn(shape, generator=gen, dtype=dtype), f"t{index}", {"mu": 1e-2})


def gauss(key, shape, dtype=torch.float64):
    return kernels.fill(torch.empty(shape, dtype=dtype), key)


def test_lowrank_point_is_theta_plus_radius_u_v_transposed():
    """u = U Vᵀ: U (m × r) the query's draw on the tensor, V (n × r) from (seed, tensor, ⌊(t − 1)/ν⌋); an
    (a, b, c) tensor is the (a, b·c) matrix."""
    dirs = LowRank(rank=3, refresh=4)
    dirs.seed = 11
    ref = ref_of((6, 2, 5), index=2)
    q = Query(77, t=6)
    U = gauss(mix(77, 2), (6, 3))
    V = gauss(mix(11, V_STREAM, 2, (6 - 1) // 4), (10, 3))
    expected = ref.param + 0.5 * (U @ V.t()).view(6, 2, 5)
    torch.testing.assert_close(dirs.point(ref, q, 0.5, base=ref.param), expected, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(dirs.combine(ref, [q, Query(78, t=6)], [1.0, -2.0]),
                               (U @ V.t() - 2 * gauss(mix(78, 2), (6, 3)) @ V.t()).view(6, 2, 5), rtol=1e-14,
                               atol=1e-14)


def test_lowrank_keeps_v_for_nu_steps_then_draws_a_new_one():
    dirs, ref = LowRank(rank=2, refresh=3), ref_of((4, 5))
    vs = [dirs.factors(ref, Query(t, t=t))[1].clone() for t in range(1, 8)]
    assert all(torch.equal(vs[0], v) for v in vs[:3]) and all(torch.equal(vs[3], v) for v in vs[3:6])
    assert not torch.equal(vs[0], vs[3]) and not torch.equal(vs[3], vs[6])


def test_vectors_get_the_samplers_dense_draw():
    dirs, ref = LowRank(rank=2), ref_of((7,))
    torch.testing.assert_close(dirs.point(ref, Query(5, t=1), 1.0), gauss(mix(5, 0), (7,)), rtol=0, atol=0)
    assert dirs.variant(ref) != dirs.variant(ref_of((3, 3)))


def test_subspace_bases_are_orthonormal_and_kept_for_t0_steps():
    dirs = Subspace(rank=4, refresh=10)
    dirs.seed = 3
    ref = ref_of((30, 20), dtype=torch.float32)
    U, V = dirs.basis(ref, 0)
    assert U.shape == (30, 4) and V.shape == (20, 4)
    for Q in (U, V):
        assert float((Q.t() @ Q - torch.eye(4)).norm()) < 1e-5
    G = gauss(mix(3, BASIS_STREAM, 0, 0, 0), (30, 4), torch.float32)
    torch.testing.assert_close(U.abs(), torch.linalg.qr(G).Q.abs())  # the Q factor of the keyed draw
    a1, _ = dirs.factors(ref, Query(9, t=10))
    assert torch.equal(dirs.basis(ref, 0)[0], U) and not torch.equal(dirs.basis(ref, 1)[0], U)
    z = gauss(mix(9, 0), (4, 4), torch.float32)
    torch.testing.assert_close(a1, U @ z * (math.sqrt(600) / 4))


def test_subspace_directions_have_the_dense_gaussians_expected_square_norm():
    """E‖√(mn)/r · U Z Vᵀ‖²_F = mn (SubZero's norm alignment), over 10⁴ draws within 2%; r = min(rank, m, n)."""
    dirs, ref = Subspace(rank=3, refresh=100), ref_of((12, 10))
    norms = torch.stack([dirs.point(ref, Query(s, t=1 + s % 300), 1.0).square().sum() for s in range(10_000)])
    assert float(norms.mean()) == pytest.approx(120.0, rel=0.02)
    assert dirs.rank_of(ref_of((2, 10))) == 2


class LOZO(zolab.ZOSGD):
    """ZO-SGD on LOZO's directions: the matrices' step is the in-place low-rank SGD of the base class."""

    def is_eager(self, ref):
        return self.grad_estimator.directions.structured(ref)


def test_probe_and_update_use_the_same_v_on_a_refresh_step():
    """At t = ν + 1 (a new V) the probed point is θ + μ U Vᵀ and the update θ − η p U Vᵀ with the same U, V
    (the authors' code redraws V before U in the probe only); the record regenerates the same u."""
    W = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    opt = LOZO([("W", W)], lr=0.1, mu=1e-3, directions=LowRank(rank=2, refresh=3), seed=4)
    seen = []

    def closure():
        seen.append(W.detach().clone())
        return (W.detach() ** 2).sum()

    for t in range(1, 5):
        seen.clear()
        before = W.detach().clone()
        opt.step(closure)
        b = opt.record.blocks[0]
        u = opt.direction(b.refs[0], b.queries[0])
        torch.testing.assert_close((seen[0] - before) / 1e-3, u, rtol=1e-9, atol=1e-9)  # the probe's u
        torch.testing.assert_close(W.detach(), before - 0.1 * b.coefficients(b.refs[0])[0] * u, rtol=1e-12,
                                   atol=1e-14)
        torch.testing.assert_close(opt.grad_estimate()["W"], b.coefficients(b.refs[0])[0] * u, rtol=1e-12, atol=0)
        assert b.queries[0].t == t and opt.grad_estimator.directions.window(t) == (t - 1) // 3


class Tied(nn.Module):
    """An embedding tied to the output head (the largest tensor), a small hidden layer and a 1-D gain."""

    def __init__(self, vocab=200, dim=16):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("ids", torch.randint(0, vocab, (2, 3)))

    def forward(self):
        return self.head(torch.tanh(self.hidden(self.emb(self.ids)))).logsumexp(-1).mean()


@pytest.mark.parametrize("dirs", [LowRank(rank=2, refresh=2), Subspace(rank=2, refresh=2)])
def test_module_mode_gives_copy_modes_numbers(dirs):
    """Rows of the embedding and chunks of the tied head, from the factors: the losses and steps of copy mode
    (to the rounding of the products)."""
    runs = []
    for perturb in ("copy", "module"):
        model = Tied()
        opt = LOZO(model.named_parameters(), lr=0.05, mu=1e-2, directions=type(dirs)(2, 2), perturb=perturb,
                   chunk_numel=1000).bind(model)
        losses = [opt.step(model) for _ in range(4)]
        runs.append((torch.stack(losses), [p.detach().clone() for p in model.parameters()]))
        assert opt.perturb_mode == perturb
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class Largest(TorchDispatchMode):
    """The largest tensor any torch op allocates while active (outputs that are new storage, not an input's)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        given = {t.untyped_storage().data_ptr() for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)}
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given:
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("perturb, dense", [("module", False), ("copy", True)])
def test_a_low_rank_step_in_module_mode_never_makes_a_tensor_the_size_of_the_largest_weight(perturb, dense):
    """In module mode the tied 200 × 16 table is looked up by rows and its head built in chunks, and the SGD step
    adds the factors' products into θ in place: no op allocates 3,200 numbers (copy mode's point does)."""
    model = Tied()
    opt = LOZO(model.named_parameters(), lr=0.05, mu=1e-2, directions=LowRank(2, 2), perturb=perturb,
               chunk_numel=1000).bind(model)
    where = model.emb.weight.data_ptr()
    with Largest() as seen:
        opt.step(model)
    assert (seen.numel >= model.emb.weight.numel()) == dense, seen.numel
    assert model.emb.weight.data_ptr() == where  # the step wrote θ in place


def test_bad_low_rank_settings_are_refused_at_construction():
    W = nn.Parameter(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"LowRank: \['W'\] are shards of larger tensors; allowed: whole tensors"):
        zolab.ZOSGD([{"params": [("W", W)], "shards": [(0, 12)]}], directions=LowRank())
    with pytest.raises(ValueError, match=r"Subspace: sampler 'sphere' normalises over the perturbed set; allowed: "
                                         r"'gaussian' or 'rademacher'"):
        Subspace(sampler="sphere")
    with pytest.raises(ValueError, match=r"invalid rank: 0; allowed: an integer >= 1"):
        LowRank(rank=0)
    with pytest.raises(ValueError, match=r"invalid refresh: 0; allowed: an integer >= 1"):
        Subspace(refresh=0)
