"""Datapath extraction by gated optimisation (paper 003 §4, Eq. 5; spec-003 §1.2).

For every image x_i the gates z_i ∈ [0, 1]^n of the gate points minimise

    L_i(z) = ‖softmax f(x_i) − softmax f(x_i; z)‖²₂ + (λ̃/n)·Σ_k z_k + (γ̃/√n)·Σ_j ‖z − z_j‖₂

over the frozen network, where the z_j are the image's fixed *references* (earlier datapaths of the
chain, Eq. 4). λ̃ and γ̃ are the spec's scale-free weights (λ = λ̃/n, γ = γ̃/√n). The loss of a batch is
the sum of its per-example terms and the optimiser is element-wise, so a batch computes exactly what
each image would compute alone (up to the floating-point effects of the batch size on convolutions).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from advlens.datapaths.gates import GateLayout, gate_layout, gated
from advlens.datapaths.solver import check_solver, check_weight, minimize_box
from advlens.errors import ConfigError
from advlens.models.adapter import AnalysedModel

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 256


@dataclass(frozen=True)
class Datapaths:
    """Continuous datapaths of N images, with the loss terms and predictions at the final gates.

    Attributes:
        layout: gate points and their widths.
        z: gate values in [0, 1].
        labels: the unmodified network's predicted class.
        probs: softmax of the unmodified network.
        gated_probs: softmax with the final continuous gates applied.
        fidelity, sparsity, constraint: the three terms of L_i at the final gates (weights included).
        lam, gamma: the scale-free weights λ̃, γ̃; steps: iterations run.

    Shape:
        z: (N, n); labels: (N,); probs, gated_probs: (N, num_classes); loss terms: (N,).
    """

    layout: GateLayout
    z: torch.Tensor
    labels: torch.Tensor
    probs: torch.Tensor
    gated_probs: torch.Tensor
    fidelity: torch.Tensor
    sparsity: torch.Tensor
    constraint: torch.Tensor
    lam: float
    gamma: float
    steps: int

    def __len__(self) -> int:
        return int(self.z.shape[0])

    @property
    def layers(self) -> tuple[str, ...]:
        return self.layout.layers

    def layer(self, name: str) -> torch.Tensor:
        """One gate point's gates. Shape: (N, n_ℓ)."""
        return self.z[:, self.layout.slice(name)]

    def by_layer(self) -> dict[str, torch.Tensor]:
        """Shape: {layer: (N, n_ℓ)}."""
        return self.layout.split(self.z)

    @property
    def loss(self) -> torch.Tensor:
        """Total L_i per image. Shape: (N,)."""
        return self.fidelity + self.sparsity + self.constraint

    @property
    def label_kept(self) -> torch.Tensor:
        """Whether the continuous gates keep the predicted class. Shape: (N,) bool."""
        return self.gated_probs.argmax(dim=1) == self.labels

    def kept_fraction(self, tau: float = 0.5) -> torch.Tensor:
        """Fraction of gates ≥ τ per image. Shape: (N,)."""
        return (self.z >= tau).float().mean(dim=1)

    def take(self, index: torch.Tensor | Sequence[int]) -> Datapaths:
        """The datapaths of the given rows (repeats allowed)."""
        index = torch.as_tensor(index, dtype=torch.long)
        fields = {name: getattr(self, name)[index] for name in
                  ("z", "labels", "probs", "gated_probs", "fidelity", "sparsity", "constraint")}
        return Datapaths(self.layout, lam=self.lam, gamma=self.gamma, steps=self.steps, **fields)

    def repeat_interleave(self, repeats: int) -> Datapaths:
        """Each row ``repeats`` times in a row (row i → rows i·r … i·r + r − 1)."""
        return self.take(torch.arange(len(self)).repeat_interleave(repeats))


def _reference_tensor(references: Sequence[Datapaths] | torch.Tensor | None, count: int,
                      layout: GateLayout) -> torch.Tensor | None:
    """References as one tensor. Shape: (N, R, n), or None."""
    if references is None:
        return None
    if isinstance(references, torch.Tensor):
        refs = references.detach().float()
        if refs.ndim == 2:
            refs = refs.unsqueeze(1)
    else:
        items = list(references)
        if not items:
            return None
        stacked = []
        for ref in items:
            if not isinstance(ref, Datapaths):
                raise ConfigError(f"references must be Datapaths (or a tensor N×R×n), got {type(ref).__name__}")
            if ref.layout != layout:
                raise ConfigError(f"a reference datapath has gate points {', '.join(ref.layers)}, the extraction "
                                  f"uses {', '.join(layout.layers)}: extract both over the same layers")
            stacked.append(ref.z.float())
        if any(len(r) not in (1, count) for r in stacked):
            raise ConfigError(f"each reference needs one datapath per image ({count}) or a single one, got "
                              f"{', '.join(str(len(r)) for r in stacked)}")
        refs = torch.stack([r.expand(count, -1) for r in stacked], dim=1)
    if refs.ndim != 3 or refs.shape[2] != layout.total or refs.shape[0] not in (1, count):
        raise ConfigError(f"references must have shape (N={count}, R, n={layout.total}), got {tuple(refs.shape)}")
    return refs.expand(count, -1, -1)


def _softmax(model: AnalysedModel, images: torch.Tensor) -> torch.Tensor:
    return torch.softmax(model(images), dim=1)


def _terms(model: AnalysedModel, layout: GateLayout, images: torch.Tensor, target: torch.Tensor, z: torch.Tensor,
           refs: torch.Tensor | None, lam: float, gamma: float) -> tuple[torch.Tensor, ...]:
    """Per-image fidelity, sparsity, constraint and the gated softmax. Shape: each (B,), probs (B, K)."""
    n = layout.total
    with gated(model, layout, z):
        probs = _softmax(model, images)
    fidelity = (probs - target).pow(2).sum(dim=1)
    sparsity = (lam / n) * z.sum(dim=1)
    if refs is None or gamma == 0:
        constraint = torch.zeros_like(fidelity)
    else:
        constraint = (gamma / math.sqrt(n)) * torch.linalg.vector_norm(z.unsqueeze(1) - refs, dim=2).sum(dim=1)
    return fidelity, sparsity, constraint, probs


def _check(model: AnalysedModel, images: torch.Tensor, lam: float, gamma: float, steps: int, lr: float,
           optimizer: str, batch_size: int) -> None:
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"images must be a tensor (N, C, H, W) in [0, 1], got {type(images).__name__}")
    model.check_input(images)
    if len(images) == 0:
        raise ConfigError("extract_datapaths needs at least one image")
    check_weight("lam", lam)
    check_weight("gamma", gamma)
    check_solver(steps, lr, optimizer)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def extract_datapaths(model: AnalysedModel, images: torch.Tensor, layers: Sequence[str] | None = None, *,
                      references: Sequence[Datapaths] | torch.Tensor | None = None, lam: float = 0.1,
                      gamma: float = 0.1, steps: int = 200, lr: float = 0.05, seed: int = 0,
                      optimizer: str = "adam", batch_size: int = DEFAULT_BATCH,
                      progress: Callable[[int, int], None] | None = None) -> Datapaths:
    """Extract one continuous datapath per image (Eq. 5 with the spec's λ̃, γ̃; z₀ = 1, projected Adam).

    Args:
        model: the frozen network (its parameters get no gradients and are not changed).
        images: pixels in [0, 1].
        layers: gate points (graph names); ``None``: every spatial post-activation output.
        references: fixed earlier datapaths each image is pulled towards (the chain's Eq. 4): a
            sequence of :class:`Datapaths` over the same layers, each with N rows or one row (shared),
            or a tensor (N, R, n). ``None`` or ``gamma = 0``: independent extraction.
        lam, gamma: λ̃ (sparsity) and γ̃ (constraint), scale-free.
        steps, lr, optimizer: T iterations of ``adam`` or ``sgd`` (momentum 0.9) with step size lr.
        seed: seeds torch's generator during the run (the solver itself draws nothing).
        batch_size: images optimised together (results do not depend on it).
        progress: called as ``progress(done, total)`` after every solver step, counting the steps of
            all batches (total = batches × steps).

    Shape:
        images: (N, C, H, W); references: see above; result z: (N, n).
    """
    _check(model, images, lam, gamma, steps, lr, optimizer, batch_size)
    layout = gate_layout(model, layers)
    count = len(images)
    refs = _reference_tensor(references, count, layout)
    device = model.device
    results: list[tuple[torch.Tensor, ...]] = []
    batches = math.ceil(count / batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, count, batch_size):
            batch = images[start:start + batch_size].to(device, model.mean.dtype)
            batch_refs = None if refs is None else refs[start:start + batch_size].to(device)
            with torch.no_grad():
                target = _softmax(model, batch)

            def loss(z: torch.Tensor) -> torch.Tensor:
                fidelity, sparsity, constraint, _ = _terms(model, layout, batch, target, z, batch_refs, lam, gamma)
                return (fidelity + sparsity + constraint).sum()

            callback = None
            if progress is not None:
                def callback(done: int, _before: int = (start // batch_size) * steps) -> None:
                    progress(_before + done, batches * steps)
            z = minimize_box(loss, torch.ones(len(batch), layout.total, device=device), steps, lr, optimizer,
                             callback=callback)
            with torch.no_grad():
                fidelity, sparsity, constraint, gated_probs = _terms(model, layout, batch, target, z, batch_refs,
                                                                     lam, gamma)
            results.append((z, target.argmax(dim=1), target, gated_probs, fidelity, sparsity, constraint))
            logger.debug("datapaths: %d/%d images", min(start + batch_size, count), count)
    z, labels, probs, gated_probs, fidelity, sparsity, constraint = (torch.cat(parts).cpu() for parts in zip(*results))
    return Datapaths(layout, z, labels, probs, gated_probs, fidelity, sparsity, constraint, float(lam), float(gamma),
                     steps)
