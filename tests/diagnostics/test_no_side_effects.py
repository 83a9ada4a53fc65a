"""Acceptance 1: probes never change the run (docs/algorithms.md §4). Every rule trains 30 steps with every probe
at every_n_steps=1 and without probes: parameters, optimizer state, logged losses and the global RNG are
bitwise equal."""

import pytest
import torch

import diagnostics as D
from tests.diagnostics._helpers import TinyNet, fit
from zolab import RULES

OPTIONS = {  # small steps, two queries where the rule allows it
    "zo_adamu": dict(lr=1e-3, mu=1e-3, total_steps=30, t1=10),
    "mezo_bcd": dict(lr=1e-2, mu=1e-3, num_queries=2),
    "hizoo": dict(lr=1e-2, mu=1e-3),  # one query (the authors' code)
    "mezo_svrg": dict(lr=1e-2, mu=1e-3),  # one direction per estimate (K = 1)
}


def all_probes(rule_name: str):
    probes = [
        D.GradientAlignment(every_n_steps=1),
        D.SecondMomentError(every_n_steps=1, beta2=0.99),
        D.HessianSpectrum(every_n_steps=1, top_k=3),
        D.BlockOverlap(every_n_steps=1),
        D.StepCost(every_n_steps=1),
    ]
    # no variance theory for ZO-AdaMU's momentum-centred directions; MeZO-SVRG's anchor steps read the full batch,
    # which the probe's extra estimates cannot (it refuses the rule)
    if rule_name not in ("zo_adamu", "mezo_svrg"):
        probes.append(D.EstimatorVariance(every_n_steps=1, num_samples=2))
    return probes


def run(rule_name, probes, zo_dropout=False, **kwargs):
    torch.manual_seed(123)
    kwargs = kwargs or OPTIONS.get(rule_name, dict(lr=1e-2, mu=1e-3, num_queries=2))
    module, logger = fit(TinyNet(), RULES[rule_name], probes, steps=30, zo_dropout=zo_dropout, **kwargs)
    state = module.zo_optimizer.state_dict()
    return module, logger, state, torch.get_rng_state()


def assert_same_run(a, b):
    (mod_a, log_a, state_a, rng_a), (mod_b, log_b, state_b, rng_b) = a, b
    for (name, p), q in zip(mod_a.task.named_parameters(), mod_b.task.parameters()):
        assert torch.equal(p, q), name
    for x, y in zip(mod_a.task.buffers(), mod_b.task.buffers()):
        assert torch.equal(x, y)
    losses_a, losses_b = log_a.series("train/loss"), log_b.series("train/loss")
    assert len(losses_a) == 30 and losses_a == losses_b
    for k, st in state_a["state"].items():
        for key, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(state_b["state"][k][key])), key
    assert torch.equal(rng_a, rng_b)


@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_probes_do_not_change_the_run(rule_name):
    probes = all_probes(rule_name)
    with_probes = run(rule_name, probes)
    assert_same_run(run(rule_name, []), with_probes)
    logged = {k for _, m in with_probes[1].rows for k in m if k.startswith("diagnostics/")}
    for p in probes:  # every probe did measure, at every step
        assert any(k.startswith(f"diagnostics/{p.name}/") for k in logged), p.name
        assert len(with_probes[1].series(f"diagnostics/{p.name}/{sorted(p.last_metrics)[0]}")) == 30


def test_dropout_and_batchnorm_in_train_mode_are_untouched():
    """zo_dropout=True: the ZO forwards draw dropout masks from the global RNG and update BatchNorm
    statistics; the probes' extra forwards must not shift either."""
    kwargs = dict(lr=1e-3, mu=1e-2, zo_dropout=True)  # sign steps stay bounded whatever the masks do to p
    assert_same_run(run("zo_signsgd", [], **kwargs), run("zo_signsgd", all_probes("zo_signsgd"), **kwargs))
