"""Common ground of the attacks: pixel-space input checks and batching."""

from __future__ import annotations

import torch
from torch import nn

from advlens.errors import AttackError


class Attack:
    """An evasion attack on a classifier that takes pixels in [0, 1].

    Subclasses implement :meth:`perturb`; calling the attack checks the inputs first.

    Shape:
        images: (N, C, H, W) in [0, 1]; labels: (N,) int64 (true labels, or targets when targeted);
        returns adversarial images (N, C, H, W) in [0, 1].
    """

    def __init__(self, model: nn.Module, targeted: bool = False) -> None:
        self.model = model
        self.targeted = targeted

    def config(self) -> dict:
        """The parameters that define the attack (recorded in the analysis store)."""
        raise NotImplementedError

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise AttackError(f"images must be N×C×H×W, got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise AttackError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if images.numel() and not (torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
            raise AttackError("images must be finite and in pixel space [0, 1]; do not normalize them before attacking")
        if labels.dtype != torch.int64:
            raise AttackError(f"labels must be int64 class indices, got {labels.dtype}")
        was_training = self.model.training
        self.model.eval()
        try:
            return self.perturb(images.detach(), labels.to(images.device)).detach()
        finally:
            self.model.train(was_training)


def input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. the input, negated for targeted attacks.

    The sign convention is "ascend this gradient": untargeted attacks increase the loss of the true
    label, targeted ones decrease the loss of the target. Model parameters get no gradient.

    Shape:
        images: (N, C, H, W); returns (N, C, H, W).
    """
    x = images.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return -grad if targeted else grad
