"""Probes are independent of their order and of which other probes run (they share the step's ∇F by holding
and releasing it), so presets (ProbeSet, Economy, Full) log what the same probes log one by one."""

import pytest
import torch

import diagnostics as D
from tests.diagnostics._helpers import TinyNet, fit
from zolab import ZOSGD, MeZOBCD, RAdaZO, ZOAdaMU

WALL_CLOCK = ("diagnostics/step_cost/wall_ms", "diagnostics/step_cost/peak_rss_mib")


def probes():
    """Every probe, each holding or reading the shared ∇F in a different hook."""
    return [D.GradientAlignment(every_n_steps=3), D.SecondMomentError(every_n_steps=3, beta2=0.9, window=1),
            D.EstimatorVariance(every_n_steps=2, num_samples=2), D.BlockOverlap(every_n_steps=3),
            D.HessianSpectrum(every_n_steps=5, top_k=2), D.StepCost(every_n_steps=4)]


def logs(callbacks, rule=MeZOBCD, steps=12, **kwargs):
    torch.manual_seed(0)
    module, logger = fit(TinyNet(), rule, callbacks, steps=steps, **(kwargs or dict(lr=1e-2, mu=1e-3)))
    rows = [(s, {k: v for k, v in m.items() if k not in WALL_CLOCK}) for s, m in logger.rows]
    return rows, [p.detach().clone() for p in module.task.parameters()]


def diagnostics_keys(rows):
    return {k for _, m in rows for k in m if k.startswith("diagnostics/")}


@pytest.mark.parametrize("rule", [ZOSGD, MeZOBCD])
def test_same_logs_in_any_order_alone_or_bundled(rule):
    forward, params = logs(probes(), rule)
    backward, params_b = logs(probes()[::-1], rule)
    first, *rest = probes()
    bundled, params_c = logs([rest[4], rest[1], rest[0], D.ProbeSet([rest[3], first, rest[2]])], rule)
    assert len(diagnostics_keys(forward)) >= 20  # every probe logged
    canonical = sorted((s, sorted(m.items())) for s, m in forward)
    assert sorted((s, sorted(m.items())) for s, m in backward) == canonical
    assert sorted((s, sorted(m.items())) for s, m in bundled) == canonical
    for a, b, c in zip(params, params_b, params_c):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_gradient_freed_after_the_last_holder():
    from diagnostics.probe import context

    align, variance = D.GradientAlignment(every_n_steps=1), D.EstimatorVariance(every_n_steps=2, num_samples=1)
    torch.manual_seed(0)
    module, _ = fit(TinyNet(), ZOSGD, [D.ProbeSet([variance]), align], steps=3, lr=1e-2, mu=1e-3)
    ctx = context(module)
    assert ctx.gradient is None and not ctx.holders


def test_economy_and_full_log_their_probes_and_cost_nothing_to_the_run():
    plain, params = logs([], ZOSGD)
    economy, params_e = logs([D.Economy(every_n_steps=2)], ZOSGD)
    full, params_f = logs([D.Full(every_n_steps=2, hessian_every_n_steps=4)], ZOSGD)
    for a, b, c in zip(params, params_e, params_f):
        assert torch.equal(a, b) and torch.equal(a, c)
    names = {k.split("/")[1] for k in diagnostics_keys(economy)}
    assert names == {"alignment", "variance", "block_overlap", "step_cost"}
    assert names | {"hessian", "second_moment"} == {k.split("/")[1] for k in diagnostics_keys(full)}
    assert "diagnostics/block_overlap/curvature_overlap" in diagnostics_keys(full)


def test_economy_has_no_curvature_for_block_rules_and_full_has():
    economy, _ = logs([D.Economy(every_n_steps=2)], MeZOBCD)
    full, _ = logs([D.Full(every_n_steps=2)], MeZOBCD)
    assert "diagnostics/block_overlap/curvature_overlap" not in diagnostics_keys(economy)
    assert "diagnostics/block_overlap/grad_overlap" in diagnostics_keys(economy)
    assert "diagnostics/block_overlap/curvature_overlap" in diagnostics_keys(full)


def test_presets_leave_out_what_does_not_apply_with_a_warning(monkeypatch):
    said = []
    monkeypatch.setattr(D.presets, "rank_zero_warn", said.append)
    economy = D.Economy(every_n_steps=2)
    torch.manual_seed(0)
    _, logger = fit(TinyNet(), ZOAdaMU, [economy], steps=6, lr=1e-3, mu=1e-3, total_steps=6, t1=2)
    assert said == ["Economy: EstimatorVariance left out: direction law 'adamu' has no variance theory "
                    "(allowed: ['gaussian', 'sphere', 'rademacher'])"]
    assert len(economy.active) == 3
    assert not any(k.startswith("diagnostics/variance/") for _, m in logger.rows for k in m)
    assert any(k.startswith("diagnostics/alignment/") for _, m in logger.rows for k in m)


def test_full_uses_the_rules_beta2_or_its_own():
    full = D.Full(every_n_steps=2, beta2=0.5)
    fit(TinyNet(), ZOSGD, [full], steps=2, lr=1e-2, mu=1e-3)  # no β2: the preset's
    second = next(p for p in full.probes if isinstance(p, D.SecondMomentError))
    assert second.beta2 == 0.5
    fit(TinyNet(), RAdaZO, [full], steps=2, lr=1e-3, mu=1e-3)
    assert second.beta2 is None  # R-AdaZO's own β2


def test_probe_set_state_round_trip_and_bad_input():
    full = D.Full(every_n_steps=2)
    fit(TinyNet(), ZOSGD, [full], steps=4, lr=1e-2, mu=1e-3)
    state = full.state_dict()
    second = next(p for p in full.probes if isinstance(p, D.SecondMomentError))
    assert list(state) == [second.state_key] and state[second.state_key]["v_star"]
    other = D.Full(every_n_steps=2)
    other.load_state_dict(state)
    other_second = next(p for p in other.probes if isinstance(p, D.SecondMomentError))
    for k, v in second.v_star.items():
        assert torch.equal(other_second.v_star[k], v.cpu())
    with pytest.raises(ValueError, match="non-empty list"):
        D.ProbeSet([])
    with pytest.raises(ValueError, match="share a state key"):
        D.ProbeSet([D.StepCost(), D.StepCost()])
    with pytest.raises(ValueError, match="curvature"):
        D.BlockOverlap(curvature="no")


def test_one_command_line_option_adds_a_preset(tmp_path):
    from zolab.lab.cli import cli_main

    cli = cli_main(["fit", "--model.task=zolab.tasks.synthetic.Quadratic", "--model.task.dim=20",
                    "--data=zolab.tasks.synthetic.SyntheticDataModule", "--trainer.max_steps=3",
                    "--trainer.logger=false", "--trainer.enable_checkpointing=false",
                    "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0",
                    "--trainer.callbacks+=diagnostics.Full", "--trainer.callbacks.every_n_steps=2",
                    "--trainer.callbacks.hessian_every_n_steps=2"])
    full = next(c for c in cli.trainer.callbacks if isinstance(c, D.Full))
    assert [p.every_n_steps for p in full.probes] == [2] * 6
    assert all(p.last_metrics for p in full.active)
