"""The tests' rule registry and the runtime rule map agree, and the runtime rules import no test code."""

import subprocess
import sys

import torch

import zolab
from zolab.rules import RULES, ZOOptimizer
from zolab.testing import REGISTRY, Dense, RuleInfo


def test_every_rule_of_the_runtime_map_has_a_test_entry_of_the_same_class():
    assert set(RULES) <= set(REGISTRY), set(RULES) - set(REGISTRY)
    for name, cls in RULES.items():
        assert REGISTRY[name].cls is cls, name
        assert issubclass(cls, ZOOptimizer) and cls.label, name  # a display name for tables and figures
    assert zolab.RULES is RULES


def test_the_rules_import_no_test_references():
    code = "import sys, zolab, zolab.rules; zolab.RULES; print(sorted(m for m in sys.modules if 'testing' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "zolab.testing" not in out, out


def test_a_rule_info_makes_its_rule_with_its_arguments_and_knows_its_directions():
    info = REGISTRY["zo_adamu"]
    opt = info.make([torch.nn.Parameter(torch.zeros(3))], lr=0.5)
    assert type(opt) is info.cls and opt.total_steps == info.kwargs["total_steps"] and opt.param_groups[0]["lr"] == 0.5
    assert info.own_directions and not REGISTRY["zo_sgd"].own_directions and info.name == "ZOAdaMU"
    assert isinstance(info, RuleInfo)


def test_dense_state_is_zero_until_a_reference_sets_it():
    d = Dense(g=torch.ones(3), ps=[], us=[], h={}, mask=torch.ones(3, dtype=torch.bool), count=torch.ones(3),
              options={})
    assert torch.equal(d.get("m"), torch.zeros(3))
    d.state["m"] = torch.full((3,), 2.0)
    assert torch.equal(d.get("m"), torch.full((3,), 2.0))


def test_the_adaptive_references_share_the_rules_denominator():
    """eps_inside_sqrt moves ζ under the root, in the references as in ZO-AdaMM (one definition)."""
    g, h = torch.full((4,), 3.0, dtype=torch.float64), {"beta": 0.0, "eps": 16.0}
    mask = torch.ones(4, dtype=torch.bool)
    for inside, den in ((False, 3.0 + 16.0), (True, 5.0)):  # v = g² = 9: √9 + 16, √(9 + 16)
        d = Dense(g=g, ps=[], us=[], h=h, mask=mask, count=torch.ones(4), options={"eps_inside_sqrt": inside})
        torch.testing.assert_close(REGISTRY["zo_rmsprop"].reference(d), g / den)
