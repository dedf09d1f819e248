"""Fast gradient sign method (Goodfellow et al., "Explaining and Harnessing Adversarial
Examples", ICLR 2015)."""

from __future__ import annotations

import math

import torch
from torch import nn

from advlens.attacks.base import Attack, input_gradient
from advlens.errors import AttackError


class FGSM(Attack):
    """One L∞ step of size ε along the sign of the input gradient, clipped to [0, 1].

    Shape:
        images: (N, C, H, W) in [0, 1]; labels: (N,) int64 (targets when ``targeted``);
        output (N, C, H, W) in [0, 1] with ‖output − images‖∞ ≤ ε.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, targeted: bool = False) -> None:
        super().__init__(model, targeted)
        if not (math.isfinite(eps) and eps >= 0):
            raise AttackError(f"FGSM needs eps ≥ 0, got {eps}")
        self.eps = float(eps)

    def config(self) -> dict:
        return {"name": "fgsm", "eps": self.eps, "targeted": self.targeted}

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        grad = input_gradient(self.model, images, labels, self.targeted)
        return (images + self.eps * grad.sign()).clamp(0.0, 1.0)
