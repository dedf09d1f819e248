"""The fast contribution approximation (spec-003 §2: "quadratic approximation", < 1 s).

f is linearised in the gates at z = 1: ``f(x; z) ≈ f(x) + J(z − 1)`` with
``J[p, k] = Σ_{q ∈ R_k} a_k(q) · ∂f_p/∂a_k(q)`` — exactly the Jacobian of the gated AOI values with
respect to the gates at z = 1, computed with one batched vector–Jacobian product per AOI neuron
(more than ``max_groups`` AOI neurons are pooled into that many groups by summation). Eq. 7/8 then
becomes the convex box-constrained problem

    Σ_i ‖J_i (z_i − 1)‖² / (‖f_i‖² + ε) + λ·Σ z + γ·Σ_{i≠j} ‖z_i − z_j‖₂,    z ∈ [0, 1],

solved by projected FISTA (≤ 500 steps, NumPy, adaptive restart; the pairwise norm smoothed as
√(‖d‖² + δ²), δ = 0.01).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

EPSILON = 1e-12
SMOOTHING = 1e-2
MAX_ITERATIONS = 500


def group_matrix(count: int, groups: int) -> torch.Tensor:
    """Summation matrix pooling ``count`` neurons into ≤ ``groups`` contiguous groups. Shape: (count, G)."""
    g = min(count, groups)
    matrix = torch.zeros(count, g)
    for column, rows in enumerate(np.array_split(np.arange(count), g)):
        matrix[rows, column] = 1.0
    return matrix


def gate_jacobian(values: Callable[[torch.Tensor], torch.Tensor], count: int, n: int, pool: torch.Tensor,
                  device: torch.device) -> torch.Tensor:
    """∂(pooled AOI values)/∂z at z = 1 per example (examples are independent in the forward pass).

    Shape:
        values(z): (m, P) for z (m, n); pool: (P, G); result (m, G, n).
    """
    z = torch.ones(count, n, device=device, requires_grad=True)
    out = values(z) @ pool.to(device)
    groups = out.shape[1]
    eye = torch.eye(groups, device=device, dtype=out.dtype)
    try:
        (jac,) = torch.autograd.grad(out, z, grad_outputs=eye.unsqueeze(1).expand(groups, count, groups).contiguous(),
                                     is_grads_batched=True, retain_graph=True)
    except RuntimeError:  # an op without a batching rule: one product per group
        jac = torch.stack([torch.autograd.grad(out[:, g].sum(), z, retain_graph=True)[0] for g in range(groups)])
    return jac.permute(1, 0, 2).detach()


def _objective(jac: np.ndarray, scale: np.ndarray, lam: float, gamma: float, live: np.ndarray, z: np.ndarray
               ) -> tuple[float, np.ndarray]:
    """Value and gradient of the linearised objective (pairwise norms smoothed). Shape: z (m, n)."""
    residual = np.einsum("igk,ik->ig", jac, z - 1.0)
    value = float(np.sum(scale * np.sum(residual ** 2, axis=1)) + lam * z[live].sum())
    grad = 2.0 * scale[:, None] * np.einsum("igk,ig->ik", jac, residual)
    grad[live] += lam
    if gamma and len(live) > 1:
        d = z[live][:, None, :] - z[live][None, :, :]  # (l, l, n)
        norm = np.sqrt(np.sum(d ** 2, axis=2) + SMOOTHING ** 2)
        np.fill_diagonal(norm, np.inf)
        value += gamma * float(np.sum(np.sqrt(np.sum(d ** 2, axis=2) + SMOOTHING ** 2)) - len(live) * SMOOTHING)
        grad[live] += 2.0 * gamma * np.sum(d / norm[:, :, None], axis=1)
    return value, grad


def solve_box_qp(jac: np.ndarray, scale: np.ndarray, lam: float, gamma: float, fixed_zero: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the linearised objective over z ∈ [0, 1] by FISTA (projected, with adaptive restart);
    rows in ``fixed_zero`` stay 0.

    Shape:
        jac: (m, G, n); scale: (m,) = 1/(‖f_i‖² + ε); fixed_zero: (m,) bool; returns z (m, n) and the
        normalised fidelity per example (m,).
    """
    m, _, n = jac.shape
    live = np.flatnonzero(~fixed_zero)
    # Lipschitz constant of the gradient: fidelity 2·scale_i·σ_max(J_i)², smoothed pairs 2γ·m/δ
    spectral = max((2.0 * scale[i] * np.linalg.norm(jac[i], 2) ** 2 for i in live), default=0.0)
    lipschitz = spectral + (2.0 * gamma * len(live) / SMOOTHING if gamma and len(live) > 1 else 0.0)
    step = 1.0 / max(lipschitz, 1e-12)
    z = np.where(fixed_zero[:, None], 0.0, 1.0) * np.ones((m, n))
    y, momentum = z.copy(), 1.0
    for _ in range(MAX_ITERATIONS):
        _, grad = _objective(jac, scale, lam, gamma, live, y)
        new = np.clip(y - step * grad, 0.0, 1.0)
        new[fixed_zero] = 0.0
        if np.sum((y - new) * (new - z)) > 0:  # the momentum points uphill: restart it
            momentum, y_next = 1.0, new
        else:
            following = (1.0 + np.sqrt(1.0 + 4.0 * momentum ** 2)) / 2.0
            y_next = new + ((momentum - 1.0) / following) * (new - z)
            momentum = following
        if np.max(np.abs(new - z)) < 1e-7:
            z = new
            break
        z, y = new, y_next
    residual = np.einsum("igk,ik->ig", jac, z - 1.0)
    fidelity = np.where(fixed_zero, 0.0, scale * np.sum(residual ** 2, axis=1))
    return z, fidelity


@dataclass(frozen=True)
class FirstOrder:
    """The linearised AOI values of m examples: pooled Jacobian and pooled values at z = 1.

    Shape:
        jac: (m, G, n'); scale: (m,) = 1 / (‖pooled f_i‖² + ε).
    """

    jac: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, values: Callable[[torch.Tensor], torch.Tensor], f: torch.Tensor, count: int, n: int,
           max_groups: int) -> FirstOrder:
        """Linearise ``values(z)`` (m, P) at z = 1; f (m, P) are its values there."""
        pool = group_matrix(f.shape[1], max_groups)
        jac = gate_jacobian(values, count, n, pool, f.device).double().cpu().numpy()
        pooled = (f.detach().cpu().double() @ pool.double()).numpy()
        return cls(jac, 1.0 / (np.sum(pooled ** 2, axis=1) + EPSILON))

    def removal_cost(self) -> torch.Tensor:
        """First-order fidelity cost of removing each map alone, ‖J[:, k]‖²/‖f‖². Shape: (m, n')."""
        return torch.from_numpy(self.scale[:, None] * np.sum(self.jac ** 2, axis=1)).float()

    def solve(self, lam: float, gamma: float, silent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The box QP with per-gate weights λ̃/n', γ̃/√n': z (m, n') and normalised fidelity (m,)."""
        z, fidelity = solve_box_qp(self.jac, self.scale, lam, gamma, silent.cpu().numpy())
        return torch.from_numpy(z).float(), torch.from_numpy(fidelity).float()
