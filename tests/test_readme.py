"""The plain-PyTorch example in README.md runs as written and trains."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_plain_pytorch_example_runs(capsys):
    text = README.read_text()
    section = text[text.index("<!-- section:engine -->"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    loss, forwards = re.search(r"loss ([\d.]+) after (\d+) forward passes", out).groups()
    assert int(forwards) == 300 * 5  # forward estimator: K + 1 = 5 per step
    import torch

    initial = torch.nn.functional.mse_loss(torch.zeros_like(namespace["y"]), namespace["y"]).item()
    assert float(loss) < 0.9 * initial, (loss, initial)
