"""Blocks: the partition of the tensors, the block(s) of each step (a joint uniform subset among them), and an
optimizer's block options."""

import pytest
import torch

import zolab
from zolab.engine.blocks import BlockPlan, module_block, partition, select

LLAMA = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
]


def test_module_blocks_follow_the_transformer_layout():
    blocks = partition(LLAMA, [1] * len(LLAMA), "module")
    assert [b for b, _ in blocks] == ["embeddings", "model.layers.0", "model.layers.1", "model.norm", "lm_head"]
    assert blocks[1][1] == [1, 2, 3]
    assert module_block("model.decoder.embed_positions.weight") == "embeddings"
    assert module_block("model.decoder.final_layer_norm.bias") == "model.decoder.final_layer_norm"


def test_equal_blocks_and_regexes():
    blocks = partition(["a", "b", "c", "d"], [10, 10, 10, 10], 2)
    assert [idx for _, idx in blocks] == [[0, 1], [2, 3]]
    assert sorted(i for _, idx in partition(LLAMA, [5, 1, 9, 1, 3, 1, 7], 3) for i in idx) == list(range(7))
    blocks = partition(LLAMA, [1] * 7, [r"layers\.0", r"layers\.1", r"embed|model\.norm|head"])
    assert [idx for _, idx in blocks] == [[1, 2, 3], [4], [0, 5, 6]]


@pytest.mark.parametrize(
    "spec,match",
    [
        ([r"layers"], "matches none"),
        ([r"layers", r"q_proj", r"embed|model\.norm|head"], "several regexes"),
        ([r"layers", r"embed|model\.norm|head", r"nothing"], "match no trainable"),
        (0, "equal blocks"),
        ("layers", "unknown"),
        (2.5, "not understood"),
    ],
)
def test_bad_block_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        partition(LLAMA, [1] * 7, spec)


def test_selections():
    n = 5
    assert [select(t, n, "cyclic", 0) for t in range(1, 8)] == [0, 1, 2, 3, 4, 0, 1]
    for epoch in range(3):
        order = [select(epoch * n + t, n, "permutation", 3) for t in range(1, n + 1)]
        assert sorted(order) == list(range(n))  # each block once per epoch
    assert [select(t, n, "permutation", 3) for t in range(1, 6)] != [select(t, n, "permutation", 3) for t in
                                                                    range(6, 11)]
    draws = [select(t, n, "uniform", 1) for t in range(1, 2001)]
    assert all(abs(draws.count(b) / 2000 - 0.2) < 0.05 for b in range(n))
    with pytest.raises(ValueError, match="block_selection"):
        select(1, n, "greedy", 0)


class Ref:
    def __init__(self, name, numel):
        self.name, self.numel = name, numel


def test_a_block_plan_partitions_refs_and_picks_the_blocks_of_a_step():
    refs = [Ref(n, 1) for n in LLAMA]
    plan = BlockPlan("module", "cyclic")
    parts = plan.partition(refs, named=True)
    assert [b for b, _ in parts] == ["embeddings", "model.layers.0", "model.layers.1", "model.norm", "lm_head"]
    assert parts[1][1] == refs[1:4]
    assert [plan.of_step(parts, t, 0)[0][0] for t in (1, 2, 6)] == ["embeddings", "model.layers.0", "embeddings"]
    assert BlockPlan("module", per_step="all").of_step(parts, 3, 0) == parts
    assert BlockPlan(None).of_step(BlockPlan(None).partition(refs, named=False), 3, 0)[0][1] == refs


def test_a_uniform_subset_is_k_blocks_without_replacement_estimated_as_one():
    """LeZO's selection: step t draws k distinct blocks from (seed, t) and joins them, in model order, into one
    block (one perturbation, one estimate); k = 1 is one block."""
    refs = [Ref(n, 1) for n in LLAMA]
    plan = BlockPlan("module", "uniform_subset", per_step=3)
    parts = plan.partition(refs, named=True)
    names = [b for b, _ in parts]
    seen = set()
    for t in range(1, 40):
        (block, chosen), = plan.of_step(parts, t, seed=7)
        picked = block.split("+")
        assert len(set(picked)) == 3 and picked == sorted(picked, key=names.index)
        assert chosen == [r for b, rs in parts if b in picked for r in rs]
        assert plan.of_step(parts, t, seed=7) == [(block, chosen)]  # a pure function of (seed, t)
        seen.add(block)
    assert len(seen) == 10  # every one of the C(5, 3) subsets turns up in 39 steps
    assert [plan.of_step(parts, t, 7) for t in range(1, 9)] != [plan.of_step(parts, t, 8) for t in range(1, 9)]
    one = BlockPlan("module", "uniform_subset").of_step(parts, 2, 7)
    assert len(one) == 1 and one[0][0] in names
    with pytest.raises(ValueError, match=r"blocks_per_step=6 but blocks='module' makes 5 blocks; allowed: an "
                                         r"integer in \[1, 5\]"):
        BlockPlan("module", "uniform_subset", per_step=6).partition(refs, named=True)


def test_tensor_granularity_is_every_tensor_a_block_each_step():
    plan = BlockPlan(granularity="tensor")
    assert (plan.spec, plan.per_step, plan.selection) == ("tensor", "all", "cyclic")
    assert len(plan.partition([Ref("a", 2), Ref("b", 3)], named=False)) == 2


@pytest.mark.parametrize("kw, match", [
    (dict(selection="greedy"), r"unknown block_selection 'greedy'; allowed"),
    (dict(per_step=0), r"invalid blocks_per_step 0; allowed: 1, 'all' or an integer k >= 2"),
    (dict(per_step=2), r"blocks_per_step=2 with block_selection='permutation'; allowed: an integer k >= 2 together "
                       r"with 'uniform_subset'"),
    (dict(per_step="all", selection="uniform_subset"), r"blocks_per_step='all' with block_selection='uniform_subset'"),
    (dict(granularity="layer"), r"unknown granularity 'layer'; allowed"),
    (dict(spec=["a"], granularity="tensor"), r"granularity='tensor' makes each tensor a block; got blocks=\['a'\]"),
])
def test_bad_block_options_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        BlockPlan(**kw)


def test_module_and_regex_blocks_need_names_and_trainable_tensors():
    with pytest.raises(ValueError, match=r"blocks='module' needs parameter names"):
        BlockPlan("module").partition([Ref("param0", 1)], named=False)
    assert len(BlockPlan(2).partition([Ref("param0", 1), Ref("param1", 1)], named=False)) == 2  # an int needs none
    with pytest.raises(ValueError, match="no trainable parameter"):
        BlockPlan().partition([], named=True)


def test_a_step_of_a_uniform_subset_perturbs_and_writes_only_its_blocks():
    """k = 2 of 4 layers a step, estimated jointly: 2 forwards, the chosen layers move, the others keep their bits
    and are never perturbed (the closure sees them unchanged at every point)."""
    model = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(4)))
    opt = zolab.ZOSGD(model.named_parameters(), lr=0.1, blocks="module", blocks_per_step=2,
                      block_selection="uniform_subset", seed=2)
    x, seen = torch.randn(5, 3), []

    def closure():
        seen.append([layer.weight.detach().clone() for layer in model])
        return model(x).square().mean()

    for t in range(1, 7):
        before = [layer.weight.detach().clone() for layer in model]
        seen.clear()
        opt.step(closure)
        (block,) = opt.record.active_blocks
        active = {int(name) for name in block.split("+")}
        assert len(active) == 2 and opt.record.forwards == 2 * t
        assert len(opt.record.blocks[0].refs) == 4  # two layers' weight and bias, one estimate
        for i, layer in enumerate(model):
            moved = not torch.equal(layer.weight.detach(), before[i])
            assert moved == (i in active)
            assert all(torch.equal(point[i], before[i]) for point in seen) == (i not in active)
