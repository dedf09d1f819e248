"""Projected first-order minimisation of a loss over gates in the box [0, 1] (spec-003 §1.2).

z starts at 1 (the unpruned network), each step is an Adam (default, lr 0.05) or SGD-with-momentum
step followed by the projection ``z ← clip(z, 0, 1)``. Nothing is random. Both optimizers act
element-wise, so when the loss is a sum of per-example terms each example's gates follow exactly the
path they would follow alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from advlens.errors import ConfigError

OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM = 0.9


def check_solver(steps: int, lr: float, optimizer: str) -> None:
    """Raise ``ConfigError`` for unusable solver settings, before any work."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"steps must be a non-negative integer, got {steps!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")


def check_weight(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}")


def minimize_box(loss: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, steps: int, lr: float,
                 optimizer: str = "adam", frozen: torch.Tensor | None = None,
                 callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Run ``steps`` projected steps on ``loss(z)`` (a scalar) from ``z``; return the final z (detached).

    ``frozen`` marks entries that keep their start value (their gradient is zeroed); ``callback(done)``
    is called after each step with the number of steps done (e.g. to report progress).

    Shape:
        z: any shape, values in [0, 1]; frozen: broadcastable bool mask.
    """
    z = z.detach().clone().requires_grad_(True)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam([z], lr=lr)
    else:
        opt = torch.optim.SGD([z], lr=lr, momentum=SGD_MOMENTUM)
    for step in range(steps):
        value = loss(z)
        (grad,) = torch.autograd.grad(value, z)
        if frozen is not None:
            grad = grad.masked_fill(frozen, 0.0)
        z.grad = grad
        opt.step()
        with torch.no_grad():
            z.clamp_(0.0, 1.0)
        if callback is not None:
            callback(step + 1)
    return z.detach()
