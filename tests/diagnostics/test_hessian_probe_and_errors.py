"""The HessianSpectrum callback on a quadratic with a chosen spectrum and on a parameter subset; bad input."""


import lightning as L
import pytest
import torch

import diagnostics as D
from diagnostics.linalg import HessianOperator, exact_hessian
from diagnostics.probe import Probe
from tests.diagnostics._helpers import TinyNet, fit
from tests.diagnostics.test_linalg import SPECTRUM, closed_form
from zolab import ZOSGD, RAdaZO, ZOAdaMU
from zolab.tasks.toy import QuadraticForm


def test_hessian_probe_logs_the_closed_forms_along_training():
    exact = D.HessianSpectrum(every_n_steps=2, method="exact", tag="exact")
    stochastic = D.HessianSpectrum(every_n_steps=2, method="stochastic", num_samples=400, tag="stochastic")
    _, logger = fit(QuadraticForm(SPECTRUM.tolist(), seed=9), RAdaZO, [exact, stochastic], steps=4, lr=1e-3,
                    mu=1e-3)
    truth = closed_form(SPECTRUM)
    for key, value in truth.items():
        logged = logger.series(f"diagnostics/hessian/exact/{key}")
        assert [s for s, _ in logged] == [0, 1, 3]
        assert [v for _, v in logged] == pytest.approx([value] * 3, rel=1e-6)
    for key in ("lambda_max", "trace", "effective_rank", "stable_rank"):
        assert stochastic.last_metrics[key] == pytest.approx(truth[key], rel=0.05), key
    assert exact.state_key != stochastic.state_key


def test_hessian_probe_on_a_named_subset():
    probe = D.HessianSpectrum(every_n_steps=1, params=r"^head\.")
    module, _ = fit(TinyNet(), ZOSGD, [probe], steps=1, lr=0.0, mu=1e-3)  # lr 0: θ_0 stays for the check
    task = module.task.eval()
    head = [task.head.weight, task.head.bias]
    H = exact_hessian(HessianOperator(lambda: task.loss(0), head))
    assert probe.last_metrics["dim"] == 9
    assert probe.last_metrics["trace"] == pytest.approx(float(H.trace()), rel=1e-5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: D.GradientAlignment(every_n_steps=0), "every_n_steps: 0"),
        (lambda: D.StepCost(every_n_steps=1.5), "every_n_steps: 1.5"),
        (lambda: D.SecondMomentError(beta2=1.0), "beta2: 1.0"),
        (lambda: D.EstimatorVariance(num_samples=0), "num_samples: 0"),
        (lambda: D.HessianSpectrum(method="full"), "unknown method 'full'"),
        (lambda: D.HessianSpectrum(top_k=0), "top_k: 0"),
        (lambda: D.HessianSpectrum(tag=""), "tag: ''"),
        (lambda: D.BlockOverlap(exact_max_dim=-1), "exact_max_dim: -1"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "rule, options, probe, match",
    [
        (ZOAdaMU, dict(total_steps=10, t1=2), D.EstimatorVariance(), "direction law 'adamu'"),
        (ZOSGD, {}, D.SecondMomentError(), "has no β2"),
        (ZOSGD, {}, D.HessianSpectrum(params="nothing"), "match no trainable tensor"),
    ],
)
def test_bad_runs_fail_before_training(rule, options, probe, match):
    with pytest.raises(ValueError, match=match):
        fit(TinyNet(), rule, [probe], steps=2, lr=1e-3, mu=1e-3, **options)


class Plain(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def training_step(self, batch, batch_idx):
        return self.w.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(4, 1))


def test_a_probe_needs_a_zo_module():
    trainer = L.Trainer(max_steps=1, callbacks=[D.GradientAlignment()], logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    with pytest.raises(TypeError, match="probes a zolab.lab.module.ZOModule"):
        trainer.fit(Plain())


PROBES = [n for n in D.__all__ if issubclass(getattr(D, n), Probe)]  # the presets are in test_presets.py


def test_probes_load_from_yaml_through_the_cli(tmp_path):
    """Each probe can be added from a config (class_path/init_args under trainer.callbacks)."""
    from zolab.lab.cli import cli_main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "trainer: {max_steps: 2, logger: false, enable_checkpointing: false, enable_progress_bar: false,\n"
        "  limit_val_batches: 0, callbacks: [\n"
        + ",\n".join(f"    {{class_path: diagnostics.{n}, init_args: {{every_n_steps: 1}}}}" for n in PROBES)
        + "]}\nmodel:\n  task: {class_path: zolab.tasks.synthetic.Quadratic, init_args: {dim: 20}}\n"
        "  optimizer: {class_path: zolab.RAdaZO, init_args: {lr: 0.001, mu: 0.01}}\n"
        "data: {class_path: zolab.tasks.synthetic.SyntheticDataModule}\n"
    )
    cli = cli_main(["fit", "--config", str(cfg)])
    probes = [c for c in cli.trainer.callbacks if type(c).__name__ in PROBES]
    assert len(probes) == 6 and all(p.last_metrics for p in probes)


