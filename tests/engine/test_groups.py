"""Param groups: what a user passes becomes torch's group dict, checked and named; refs list the tensors with
their names and shard offsets; shards and hyper-parameters are checked before any step."""

import pytest
import torch
from torch import nn

import zolab
from zolab.engine import groups
from zolab.engine.schedules import Linear


def test_a_group_takes_a_tensor_tensors_named_pairs_or_a_dict():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3, 2))
    assert groups.prepare(a, 0)["params"] == [a]
    assert groups.prepare(iter([a, b]), 0)["params"] == [a, b]
    g = groups.prepare([("x.weight", b), ("x.bias", a)], 0)
    assert g["params"] == [b, a] and g["param_names"] == ["x.weight", "x.bias"] and g["decay_1d"] is False
    g = groups.prepare({"params": [a], "weight_decay": 0.1, "lr": 0.5}, 0)
    assert g["decay_1d"] is True and g["lr"] == 0.5  # a group that sets decay decays its 1-D tensors too


def test_refs_name_unnamed_tensors_by_their_place_in_the_optimizer():
    a, b, c = (nn.Parameter(torch.zeros(n)) for n in (2, 3, 4))
    gs = [groups.prepare([a, b], 0), groups.prepare({"params": [("c", c)], "shards": [(4, 10)]}, 2)]
    refs = groups.refs(gs)
    assert [(r.index, r.name, r.numel, r.offset) for r in refs] == [(0, "param0", 2, 0), (1, "param1", 3, 0),
                                                                     (2, "c", 10, 4)]
    assert refs[2].group is gs[1] and refs[2].full_numel == 10


@pytest.mark.parametrize("params, match", [
    ([torch.zeros(2, dtype=torch.int64)], r"torch.int64 is not supported; allowed: real floating-point"),
    ([torch.zeros(2, dtype=torch.complex64)], "torch.complex64 is not supported"),
    (["w"], "parameter of type str is not supported"),
])
def test_tensors_no_step_could_update_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        groups.prepare(params, 0)


def test_a_repeated_or_meta_tensor_is_named_by_its_place_in_the_optimizer():
    a = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=r"'param4' is the same tensor as 'param3'"):
        groups.prepare([a, a], 3)
    with pytest.raises(ValueError, match=r"'param3' is on the meta device"):
        groups.prepare([torch.zeros(2, device="meta")], 3)


def test_a_schedule_in_a_group_is_refused():
    with pytest.raises(ValueError, match=r"param group 'lr': schedules go to the constructor"):
        groups.prepare({"params": [nn.Parameter(torch.zeros(2))], "lr": Linear(1.0, 0.0, 3)}, 0)


@pytest.mark.parametrize("shards, match", [
    ([(0, 10)], r"one \(offset, full numel\) or None per tensor \(2\)"),
    ([(0, 10), (8, 10)], r"shard \(8, 10\) of a tensor of 3 elements"),
    ([(-1, 10), None], r"shard \(-1, 10\)"),
    ([(0.5, 10), None], r"shard \(0.5, 10\)"),
])
def test_bad_shards_are_named(shards, match):
    params = [torch.zeros(4), torch.zeros(3)]
    with pytest.raises(ValueError, match=match):
        groups.check_shards(params, shards, fused=True, perturb="auto")


def test_shards_need_the_counter_rng_and_in_place_perturbation():
    params = [torch.zeros(4)]
    groups.check_shards(params, [(4, 8)], fused=True, perturb="copy")
    with pytest.raises(ValueError, match="shards need rng='counter'"):
        groups.check_shards(params, [(4, 8)], fused=False, perturb="copy")
    with pytest.raises(ValueError, match="shards are perturbed whole, in place"):
        groups.check_shards(params, [(4, 8)], fused=True, perturb="module")
    groups.check_shards(params, [None], fused=False, perturb="module")  # no shard: no condition


@pytest.mark.parametrize("group, match", [
    ({"lr": -1.0, "mu": 1.0}, r"invalid lr: -1.0; allowed: a number in \[0.0, inf\)"),
    ({"lr": 0.0, "mu": 0.0}, r"invalid mu: 0.0; allowed: a number in \(0.0, inf\)"),
    ({"lr": 0.0, "mu": 1.0, "weight_decay": -1.0}, "invalid weight_decay"),
    ({"lr": 0.0, "mu": 1.0, "eps": -1.0}, "invalid eps"),
    ({"lr": 0.0, "mu": 1.0, "betas": (1.0, 0.5)}, r"invalid betas\[0\]"),
])
def test_shared_hyper_parameters_are_checked(group, match):
    with pytest.raises(ValueError, match=match):
        groups.check_hyper(group)


def test_a_group_added_later_is_checked_and_named_after_the_existing_tensors():
    a = nn.Parameter(torch.zeros(2))
    opt = zolab.ZOSGD([a])
    b = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"'param2' is the same tensor as 'param1'"):
        opt.add_param_group({"params": [b, b]})
    with pytest.raises(ValueError, match="invalid mu"):
        opt.add_param_group({"params": [b], "mu": -1.0})
    opt.add_param_group({"params": [b], "lr": 0.5})
    assert [r.name for _, refs in opt.partition() for r in refs] == ["param0", "param1"]


def test_compute_type_is_float64_for_float64_and_float32_otherwise():
    for dtype, ct in [(torch.float64, torch.float64), (torch.float32, torch.float32),
                      (torch.float16, torch.float32), (torch.bfloat16, torch.float32)]:
        assert groups.compute_type(torch.zeros(1, dtype=dtype)) == ct
    assert not groups.is_dtensor(torch.zeros(1))
