"""Critical sets: binary datapaths D_i = {k : z_k ≥ τ_i}, with the label guard (spec-003 §1.2).

A critical set explains a prediction only if the network restricted to it (gates = 1[z ≥ τ]) still
predicts the same class. The *label guard* checks this and, for an image whose label changes, lowers
its τ in steps of 0.05 (not below 0.05) to the first value that keeps the label; an image that no
tried τ can keep is flagged and keeps the requested τ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advlens.datapaths.extraction import Datapaths
from advlens.datapaths.gates import GateLayout, gated
from advlens.errors import ConfigError
from advlens.models.adapter import AnalysedModel

GUARD_STEP = 0.05
GUARD_MINIMUM = 0.05


@dataclass(frozen=True)
class CriticalSet:
    """Binary datapaths of N images.

    Attributes:
        layout: gate points (None when built from a bare tensor).
        mask: whether each gate is in the set.
        tau: the threshold used per image (lowered by the guard where needed).
        label_kept: whether gates = mask keep the predicted class (None without the guard).
        flagged: images for which no tried τ keeps the class (all False without the guard).

    Shape:
        mask: (N, n) bool; tau: (N,); label_kept, flagged: (N,) bool.
    """

    layout: GateLayout | None
    mask: torch.Tensor
    tau: torch.Tensor
    label_kept: torch.Tensor | None
    flagged: torch.Tensor

    def layer(self, name: str) -> torch.Tensor:
        """Shape: (N, n_ℓ) bool."""
        if self.layout is None:
            raise ConfigError("this critical set was built from a bare tensor: it has no layers")
        return self.mask[:, self.layout.slice(name)]

    def indices(self, row: int, layer: str) -> list[int]:
        """Feature maps of ``layer`` in image ``row``'s set."""
        return torch.nonzero(self.layer(layer)[row]).flatten().tolist()


def _thresholds(tau: float) -> list[float]:
    """τ, τ − 0.05, … down to 0.05 (the guard's tries)."""
    values = [tau]
    while round(values[-1] - GUARD_STEP, 10) >= GUARD_MINIMUM - 1e-12:
        values.append(round(values[-1] - GUARD_STEP, 10))
    return values


def binary_labels(model: AnalysedModel, images: torch.Tensor, layout: GateLayout, mask: torch.Tensor,
                  batch_size: int = 256) -> torch.Tensor:
    """The class predicted with gates = ``mask``. Shape: images (N, C, H, W), mask (N, n) → (N,)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(model.device, model.mean.dtype)
            gates = mask[start:start + batch_size].to(model.device, model.mean.dtype)
            with gated(model, layout, gates):
                out.append(model(batch).argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def critical_set(z: Datapaths | torch.Tensor, tau: float = 0.5, *, model: AnalysedModel | None = None,
                 images: torch.Tensor | None = None) -> CriticalSet:
    """Threshold continuous datapaths at τ; with ``model`` and ``images``, apply the label guard.

    Args:
        z: extracted datapaths, or a bare gate tensor (then no guard is possible).
        tau: the threshold in (0, 1].
        model, images: the network and the images the datapaths were extracted from; both or neither.
            The label to keep is ``z.labels`` (the unmodified network's prediction).

    Shape:
        z: (N, n) gates; images: (N, C, H, W); result mask (N, n).
    """
    if not (isinstance(tau, (int, float)) and 0 < tau <= 1):
        raise ConfigError(f"tau must lie in (0, 1], got {tau!r}")
    if (model is None) != (images is None):
        raise ConfigError("the label guard needs both model= and images= (or neither for a plain threshold)")
    gates = z.z if isinstance(z, Datapaths) else torch.as_tensor(z)
    if gates.ndim != 2:
        raise ConfigError(f"gates must have shape (N, n), got {tuple(gates.shape)}")
    count = len(gates)
    taus = torch.full((count,), float(tau))
    layout = z.layout if isinstance(z, Datapaths) else None
    if model is None:
        return CriticalSet(layout, gates >= tau, taus, None, torch.zeros(count, dtype=torch.bool))
    if not isinstance(z, Datapaths):
        raise ConfigError("the label guard needs Datapaths (their layers and labels), not a bare tensor")
    if len(images) != count:
        raise ConfigError(f"{count} datapaths but {len(images)} images: pass the images they were extracted from")
    model.check_input(images)
    kept = torch.zeros(count, dtype=torch.bool)
    for value in _thresholds(float(tau)):
        todo = torch.nonzero(~kept).flatten()
        if len(todo) == 0:
            break
        labels = binary_labels(model, images[todo], z.layout, gates[todo] >= value)
        ok = labels == z.labels[todo]
        taus[todo[ok]] = value
        kept[todo[ok]] = True
    mask = gates >= taus.unsqueeze(1)
    return CriticalSet(layout, mask, taus, kept, ~kept)
