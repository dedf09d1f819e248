"""Projected gradient descent (Madry et al., "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018), the attack analysed in paper 001 (κ = 7, ε = 8/255, α = 2/255)."""

from __future__ import annotations

import math

import torch
from torch import nn

from advlens.attacks.base import Attack, input_gradient
from advlens.errors import AttackError



class PGD(Attack):
    """PGD under an L∞ or L2 budget, untargeted or targeted, in pixel space.

    Each step moves ``alpha`` along the sign of the loss gradient (L∞) or the L2-normalized
    gradient (L2), clips to [0, 1] and projects the perturbation back onto the ε-ball. Without
    ``random_start`` it starts at the benign image, like adversarial-robustness-toolbox's
    ``ProjectedGradientDescent`` with ``num_random_init=0``; with it, at a uniform point of the
    ε-ball drawn from a generator seeded once by ``seed`` (a fresh attack object repeats the
    same sequence of starts).

    Args:
        model: classifier taking pixels in [0, 1] and returning logits.
        eps: perturbation budget ε (L∞: per pixel; L2: per image).
        alpha: step size α.
        steps: number of iterations κ.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a random point of the ε-ball.
        targeted: if True the labels passed are the targets.
        seed: seed of the random start.

    Shape:
        images: (N, C, H, W) in [0, 1]; labels: (N,) int64; output (N, C, H, W) in [0, 1] with
        ‖output − images‖ ≤ ε.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7,
                 norm: str = "linf", random_start: bool = False, targeted: bool = False,
                 seed: int = 0) -> None:
        super().__init__(model, targeted)
        norm = str(norm).lower().replace("∞", "inf")
        if norm not in ("linf", "inf", "l2", "2"):
            raise AttackError(f"unknown norm {norm!r}; use 'linf' or 'l2'")
        if not (math.isfinite(eps) and eps >= 0 and math.isfinite(alpha) and alpha > 0) or steps < 1:
            raise AttackError(f"PGD needs eps ≥ 0, alpha > 0 and steps ≥ 1 (got {eps}, {alpha}, {steps})")
        self.eps, self.alpha, self.steps = float(eps), float(alpha), int(steps)
        self.norm = "linf" if norm in ("linf", "inf") else "l2"
        self.random_start = random_start
        self.seed = seed
        self._generator = torch.Generator(device="cpu").manual_seed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random-start generator from ``seed`` (e.g. one seed per batch, so that a
        resumed run draws the same starts as an uninterrupted one)."""
        self._generator.manual_seed(seed)

    def config(self) -> dict:
        return {"name": "pgd", "eps": self.eps, "alpha": self.alpha, "steps": self.steps, "norm": self.norm,
                "random_start": self.random_start, "targeted": self.targeted, "seed": self.seed}

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        norms = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.ndim - 1)))
        return delta * torch.where(norms > self.eps, self.eps / norms.clamp_min(1e-30), torch.ones_like(norms))

    def _step(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return self.alpha * grad.sign()
        norms = grad.flatten(1).norm(dim=1).view(-1, *([1] * (grad.ndim - 1)))
        return self.alpha * grad / torch.where(norms > 0, norms, torch.ones_like(norms))  # zero gradient: no step

    def _random_delta(self, images: torch.Tensor) -> torch.Tensor:
        generator = self._generator  # advances across calls: each batch gets its own start
        if self.norm == "linf":
            delta = (torch.rand(images.shape, generator=generator) * 2 - 1) * self.eps
        else:
            direction = torch.randn(images.shape, generator=generator)
            direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            dims = images[0].numel()
            radius = self.eps * torch.rand(images.shape[0], generator=generator) ** (1.0 / dims)
            delta = direction * radius.view(-1, 1, 1, 1)
        return delta.to(images.device, images.dtype)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adversarial = images.clone()
        if self.random_start:
            adversarial = (images + self._random_delta(images)).clamp(0.0, 1.0)
        for _ in range(self.steps):
            grad = input_gradient(self.model, adversarial, labels, self.targeted)
            adversarial = (adversarial + self._step(grad)).clamp(0.0, 1.0)
            adversarial = (images + self._project(adversarial - images)).clamp(0.0, 1.0)
        return adversarial
