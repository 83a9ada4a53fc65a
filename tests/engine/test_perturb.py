"""perturb='module': each perturbed tensor built only inside its module's forward, numbers of 'copy' mode, for
the points of any difference scheme."""

import pytest
import torch
from torch import nn

import zolab
from zolab.engine.perturb import Perturber
from zolab.engine.schemes import Differences, DifferenceScheme, Point

IDS = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def run(perturb, rule=zolab.ZOSGD, steps=3, chunk_numel=1 << 22, lr=1e-2, **kw):
    model = tiny_llama()
    opt = rule(model.named_parameters(), lr=lr, mu=1e-2, perturb=perturb, chunk_numel=chunk_numel, **kw)
    opt.bind(model)
    losses = torch.stack([opt.step(lambda: model(input_ids=IDS, labels=IDS).loss) for _ in range(steps)])
    return losses, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("rule,kw", [(zolab.ZOSGD, {}), (zolab.RAdaZO, {}),
                                     (zolab.ZOSGD, dict(directions="rademacher", num_queries=2)),
                                     (zolab.MeZOBCD, dict(blocks="module")),
                                     (zolab.ZOAdaMU, dict(total_steps=10, t1=2))])
def test_module_mode_gives_the_numbers_of_copy_mode(rule, kw):
    # tied embedding/LM head: the embedding's rows and the head's full weight draw the same z
    (la, pa), (lb, pb) = run("copy", rule, **kw), run("module", rule, **kw)
    assert torch.equal(la, lb) and torch.equal(pa, pb)


def test_chunked_linear_matches_to_rounding():
    (la, pa), (lc, pc) = run("copy"), run("module", chunk_numel=1000)  # the 300 x 32 head in chunks
    assert torch.allclose(la, lc, rtol=1e-6, atol=0)
    assert torch.allclose(pa, pc, atol=1e-5)


def test_parameters_restored_bitwise_and_after_a_raising_closure():
    model = tiny_llama()
    before = [p.detach().clone() for p in model.parameters()]
    opt = zolab.ZOSGD(model.named_parameters(), lr=0.0, mu=1e-1, perturb="module").bind(model)
    for _ in range(3):
        opt.step(lambda: model(input_ids=IDS, labels=IDS).loss)
    calls = []

    def failing():
        calls.append(1)
        model(input_ids=IDS)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert not model.model.layers[0].mlp.up_proj._forward_hooks  # hooks removed


def test_extra_memory_is_one_layer_not_the_model():
    model = tiny_llama()
    opt = zolab.ZOSGD(model.named_parameters(), lr=1e-3, perturb="module").bind(model)
    opt.step(lambda: model(input_ids=IDS, labels=IDS).loss)
    pooled = sum(b.numel() for free in opt.perturber.pool.values() for b in free)
    largest = max(p.numel() for p in model.parameters())
    assert pooled <= 2 * largest < sum(p.numel() for p in model.parameters())


class OutsideUse(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 3)

    def forward(self, x):
        return x @ self.inner.weight  # reads the tensor without calling its module


def test_a_tensor_used_outside_its_module_is_an_error():
    model = OutsideUse()
    opt = zolab.ZOSGD([model.inner.weight], lr=1e-3, perturb="module").bind(model)
    with pytest.raises(RuntimeError, match="never perturbed"):
        opt.step(lambda: model(torch.ones(2, 3)).sum())


def test_bad_settings_are_named():
    p = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="perturb 'inplace'"):
        zolab.ZOSGD([p], perturb="inplace")
    with pytest.raises(ValueError, match="rng='counter'"):
        zolab.ZOSGD([p], perturb="module", rng="torch")
    with pytest.raises(RuntimeError, match="bind"):
        zolab.ZOSGD([p], perturb="module").step(lambda: p.sum())
    with pytest.raises(ValueError, match="not parameters of the bound model"):
        zolab.ZOSGD([p], perturb="module").bind(nn.Linear(2, 2)).step(lambda: p.sum())


def test_auto_resolves_to_module_only_for_a_bound_model_that_owns_the_tensors_through_submodules():
    model = nn.Sequential(nn.Linear(3, 3))
    refs = zolab.ZOSGD(model.named_parameters()).partition()[0][1]
    auto = Perturber("auto")
    assert auto.resolved(refs, fused=True) == "copy"  # no model bound
    auto.model = model
    assert auto.resolved(refs, fused=True) == "module"
    assert auto.resolved(refs, fused=False) == "copy"  # the torch rng cannot draw single elements
    auto.copy_only = True  # a tensor was met outside its module's forward
    assert auto.resolved(refs, fused=True) == "copy"
    assert Perturber("copy").resolved(refs, fused=True) == "copy"
    assert Perturber("module").resolved(refs, fused=False) == "module"  # as asked; the optimizer refuses this


def test_bad_perturbation_options_are_named():
    with pytest.raises(ValueError, match=r"unknown perturb 'inplace'; allowed: \['auto', 'copy', 'module'\]"):
        Perturber("inplace")
    with pytest.raises(ValueError, match=r"invalid chunk_numel: 0; allowed: an integer >= 1"):
        Perturber("module", chunk_numel=0)


class Summed(DifferenceScheme):
    """A test scheme whose points all have several queries: θ ± μ(u_1 + ½u_2 + ...); δ_k = (ℓ₊ − ℓ₋)/2 each."""

    name = "summed"

    def points(self, queries):
        return [Point(tuple((q, s / (k + 1)) for k, q in enumerate(queries))) for s in (1.0, -1.0)]

    def differences(self, losses, queries, refs):
        return Differences(((losses[0] - losses[1]) / 2).repeat(len(queries)), losses, losses.mean())


def test_points_of_several_queries_are_built_whole_in_module_mode_with_copy_modes_numbers():
    """The embedding's rows and the head's chunks are for one-query points; a point of several queries builds
    each module's tensors whole (one module at a time): bitwise the numbers of copy mode, chunks or not."""
    (la, pa), (lb, pb) = (run(perturb, estimator=Summed(), num_queries=3, chunk_numel=1000)
                          for perturb in ("copy", "module"))
    assert torch.equal(la, lb) and torch.equal(pa, pb)


def test_a_raising_closure_at_a_point_of_several_queries_restores_the_parameters():
    model = tiny_llama()
    before = [p.detach().clone() for p in model.parameters()]
    opt = zolab.ZOSGD(model.named_parameters(), lr=1e-2, estimator=Summed(), num_queries=2, perturb="module",
                      chunk_numel=1000).bind(model)

    def failing():
        model(input_ids=IDS)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert "forward" not in model.model.embed_tokens.__dict__  # the row override is removed


def test_a_rules_own_directions_build_only_the_embedding_rows_a_batch_reads(monkeypatch):
    # ZO-AdaMU's directions read its momentum (a program): module mode builds the looked-up rows with the
    # program, not the whole table, without opting into Linear row chunks (direction_slices stays unset)
    from zolab.engine.directions import RuleDirections

    built = []
    original = RuleDirections.embedding_rows
    monkeypatch.setattr(RuleDirections, "embedding_rows",
                        lambda self, *a: built.append(a[3].numel()) or original(self, *a))
    assert not getattr(zolab.ZOAdaMU, "direction_slices", False)
    (la, pa) = run("copy", zolab.ZOAdaMU, total_steps=10, t1=2)
    assert not built
    (lb, pb) = run("module", zolab.ZOAdaMU, total_steps=10, t1=2)
    assert built and set(built) == {IDS.numel() * 32}  # two forwards a step, each the batch's 24 rows of 32
    assert torch.equal(la, lb) and torch.equal(pa, pb)
