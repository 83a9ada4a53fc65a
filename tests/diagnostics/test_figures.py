"""The Figure 2 and ablation scripts on small fake sweeps (TensorBoard event files + config.yaml)."""

import yaml
from torch.utils.tensorboard import SummaryWriter

from paper_figures import adamu_ablation, radazo_fig2


def fake_run(path, betas, scalars: dict[str, list[float]]):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"model": {"optimizer": {"init_args": {"betas": betas}}}}))
    writer = SummaryWriter(str(path))
    for tag, values in scalars.items():
        for step, value in enumerate(values):
            writer.add_scalar(tag, value, step)
    writer.close()


def test_radazo_fig2_tables_verdicts_and_png(tmp_path, capsys):
    for b1, cos_m in ((0.0, 0.1), (0.5, 0.2), (0.9, 0.4)):
        fake_run(tmp_path / "radazo_fig2a" / f"b{b1}", [b1, 0.99],
                 {radazo_fig2.ALIGN[0]: [0.5, 0.1, 0.1], radazo_fig2.ALIGN[1]: [0.5, cos_m, cos_m]})
    for b2, rule in ((0.5, 3.0), (0.9, 2.0), (0.99, 2.5)):  # not monotone: R3 must fail
        fake_run(tmp_path / "radazo_fig2b" / f"b{b2}", [0.9, b2],
                 {radazo_fig2.ERROR[0]: [50.0, 50.0], radazo_fig2.ERROR[1]: [9.0, rule]})
    out = tmp_path / "fig.png"
    assert radazo_fig2.main(["--runs", str(tmp_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "R2 holds" in text and "R3 does not hold" in text and "falls as β2 grows: False" in text
    assert out.stat().st_size > 10_000
    table = radazo_fig2.sweep_table(tmp_path / "radazo_fig2a", radazo_fig2.ALIGN, 0)
    assert list(table) == [0.0, 0.5, 0.9] and abs(table[0.9][radazo_fig2.ALIGN[1]][0] - 0.4) < 1e-6  # 2nd half


def test_adamu_ablation_groups_seeds(tmp_path, capsys):
    for arm, final in (("hold", 0.5), ("all_off", 0.2)):
        for seed in (0, 1):
            scalars = {"train/loss": [2.0, 1.0, final + seed / 10]}
            scalars.update({tag: [1.0, 0.5, 0.1] for tag, _ in adamu_ablation.SCHEDULES})
            fake_run(tmp_path / f"{arm}-seed={seed}", [0.9, 0.01], scalars)
    out = tmp_path / "ablation.png"
    assert adamu_ablation.main(["--runs", str(tmp_path), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("all_off") and "0.2500" in lines[1]  # best first, mean over the two seeds
    assert out.exists()
