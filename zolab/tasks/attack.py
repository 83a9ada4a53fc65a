"""Black-box targeted attack on the MNIST CNN (R-AdaZO Sec. 6.2, App. B.2, Table 1; docs/algorithms.md §6).

The variable is δ ∈ R^784, starting at δ₀ = 0. The attacked image is

    x̃ = clip₀¹(x + clip(δ, −ε, ε)),   ε = 0.2 (ℓ∞ constraint),

and the loss, on the network's log-softmax scores s = f(x̃), is the targeted margin

    L(δ) = −(s_t − max_{j≠t} s_j),   target t = (y + 1) mod 10.

The attack succeeds when t is the arg-max of s (then L < 0). The network is a black box: the optimizer
only sees L's values (its weights are frozen buffers of this task, never perturbed). ``done()`` reports
success, so a ``zolab fit`` run stops there (``ZOModule`` skips the remaining batches).

Example (one victim through Lightning; ``zolab.lab.attack_runner`` loops over victims × seeds × rules)::

    zolab fit --config experiments/attack/radazo.yaml
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from zolab.tasks.base import Task
from zolab.tasks.mnist import load_cnn, load_mnist


def attacked_image(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """clip₀¹(x + clip(δ, −ε, ε)); batched over leading dims of ``delta``."""
    return (x + delta.clamp(-eps, eps)).clamp(0.0, 1.0)


def margin_loss(scores: torch.Tensor, target: int) -> torch.Tensor:
    """−(s_t − max_{j≠t} s_j) for scores of shape (..., 10)."""
    others = scores.clone()
    others[..., target] = -torch.inf
    return -(scores[..., target] - others.amax(-1))


def victims(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, n: int) -> list[int]:
    """Indices of the first ``n`` correctly classified images (the attack's victims)."""
    with torch.no_grad():
        correct = (net(images).argmax(1) == labels).nonzero().flatten()
    if len(correct) < n:
        raise ValueError(f"only {len(correct)} correctly classified images, {n} victims asked")
    return correct[:n].tolist()


class MNISTAttack(Task):
    """Args:

    checkpoint: the CNN's ``state_dict`` file (``runs/mnist/cnn.pt``, written by
        ``experiments/mnist/train_cnn.yaml``).
    data_dir: the MNIST folder; index: the victim's position in the test set.
    eps: the ℓ∞ bound ε (0.2); target: the target class (None: (y + 1) mod 10).
    network, image, label: give the CNN and the victim directly instead (tests, the runner).
    """

    def __init__(
        self,
        checkpoint: str | None = "runs/mnist/cnn.pt",
        data_dir: str = "../shared/data/mnist",
        index: int = 0,
        eps: float = 0.2,
        target: int | None = None,
        network: nn.Module | None = None,
        image: torch.Tensor | None = None,
        label: int | None = None,
    ):
        super().__init__()
        if not 0 < eps <= 1:
            raise ValueError(f"eps={eps!r}; allowed: a number in (0, 1]")
        net = network if network is not None else load_cnn(Path(checkpoint))
        if image is None:
            images, labels = load_mnist(data_dir, "test")
            if not 0 <= index < len(images):
                raise ValueError(f"index={index}; allowed: 0 <= index < {len(images)}")
            image, label = images[index], int(labels[index])
        if label is None:
            raise ValueError("an image given directly needs its label")
        target = (label + 1) % 10 if target is None else target
        if not 0 <= target <= 9 or target == label:
            raise ValueError(f"target={target}; allowed: a class in 0..9 other than the label {label}")
        self.net = net.eval().requires_grad_(False)
        self.eps, self.label, self.target = float(eps), int(label), int(target)
        self.register_buffer("x", image.reshape(784).float())
        self.delta = nn.Parameter(torch.zeros(784))

    def zo_named_parameters(self):
        return [("delta", self.delta)]

    def scores(self) -> torch.Tensor:
        return self.net(attacked_image(self.x, self.delta, self.eps)).squeeze(0)

    def loss(self, batch=None) -> torch.Tensor:
        return margin_loss(self.scores(), self.target)

    supports_batched = True

    def batched_loss(self, points: torch.Tensor, batch=None) -> torch.Tensor:
        """L at stacked values of δ, shape (n, 784) -> (n,): the K (+1) queries of a step in one forward."""
        return margin_loss(self.net(attacked_image(self.x, points, self.eps)), self.target)

    @torch.no_grad()
    def success(self) -> bool:
        """Whether the target class is the arg-max at the current δ."""
        return int(self.scores().argmax()) == self.target

    def done(self) -> bool:
        return self.success()

    def metrics(self, batch=None) -> dict[str, torch.Tensor]:
        return {"loss": self.loss(), "success": torch.tensor(float(self.success()))}
