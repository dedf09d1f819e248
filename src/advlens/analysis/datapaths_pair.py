"""One pair's datapath chain as the ``/datapaths`` page shows it, and its layout in ``store.derived``.

:func:`compute_pair_datapaths` extracts the chain adv → src → targets (spec-003 §1.2) of one pair and adds
what the views need: the critical sets after the label guard, the predictions with the gates applied,
the river's per-layer distances (raw ℓ2 and RMS-normalised, spec-003 §4) and every map's spatial-max
activation (the treemap's activation-difference encoding). :class:`PairDatapaths` holds it as NumPy
arrays with one row per example, in the order adv, src, tar_0 … tar_{K−1}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from advlens.datapaths import datapath_chain, gate_layout
from advlens.datapaths.critical import binary_labels
from advlens.models.adapter import AnalysedModel

ROLES = ("adv", "src", "tar")
ADV, SRC = 0, 1
FIRST_TARGET = 2

_ARRAYS = ("target_rows", "target_dataset_index", "z", "critical", "tau", "label_kept", "flagged", "labels", "probs",
           "gated_probs", "binary_pred", "acti", "d1", "d2", "d3", "d1_rms", "d2_rms", "d3_rms")
_ATTRS = ("pair", "layers", "sizes", "lam", "gamma", "steps", "lr", "tau_requested", "seed", "seconds")


@dataclass(frozen=True)
class PairDatapaths:
    """The datapaths of one pair: its adversarial, its source and K targets of the adversarial class.

    Rows (examples) are ``adv, src, tar_0 … tar_{K−1}`` (E = K + 2); columns of the gate arrays follow
    :attr:`layers` (n = Σ sizes gates). Layer distances use the gates of one layer each
    (spec-003 §4: d1 = dist(src, tar), d2 = dist(adv, src), d3 = dist(adv, tar)); ``*_rms`` divide by √n_ℓ.

    Attributes:
        pair: the store's pair id. layers, sizes: gate points and their maps (channels).
        target_rows, target_dataset_index: the targets' rows of the attack stage and dataset indices.
        z: continuous gates. critical: the critical sets (z ≥ tau per example, label-guarded).
        tau: each example's threshold after the label guard; label_kept: whether gates = critical keep
            the label; flagged: no tried τ keeps it.
        labels: the unmodified network's prediction; probs: its softmax; gated_probs: the softmax with
            the continuous gates applied; binary_pred: the prediction with gates = critical.
        acti: each map's spatial-max activation (the unmodified network).
        lam, gamma, steps, lr, tau_requested, seed: the extraction's settings (λ̃, γ̃, T).
        seconds: wall time of the extraction (chain, guard, activations).

    Shape:
        target_rows, target_dataset_index: (K,) int64; z, acti: (E, n) float32; critical: (E, n) bool;
        tau: (E,) float32; label_kept, flagged: (E,) bool; labels, binary_pred: (E,) int64;
        probs, gated_probs: (E, C) float32; d1, d3, d1_rms, d3_rms: (K, L) float32 (one row per target);
        d2, d2_rms: (L,) float32; L = len(layers).
    """

    pair: int
    layers: tuple[str, ...]
    sizes: tuple[int, ...]
    target_rows: np.ndarray
    target_dataset_index: np.ndarray
    z: np.ndarray
    critical: np.ndarray
    tau: np.ndarray
    label_kept: np.ndarray
    flagged: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    gated_probs: np.ndarray
    binary_pred: np.ndarray
    acti: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    d3: np.ndarray
    d1_rms: np.ndarray
    d2_rms: np.ndarray
    d3_rms: np.ndarray
    lam: float
    gamma: float
    steps: int
    lr: float
    tau_requested: float
    seed: int
    seconds: float

    # ------------------------------------------------------------------ layout
    @property
    def num_targets(self) -> int:
        """K."""
        return int(len(self.target_rows))

    @property
    def roles(self) -> tuple[str, ...]:
        """The role of each row: ``adv``, ``src``, then ``tar`` K times."""
        return ("adv", "src", *(["tar"] * self.num_targets))

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each layer's columns; the last entry is n."""
        return tuple(int(v) for v in np.concatenate([[0], np.cumsum(self.sizes)]))

    def layer_slice(self, layer: str) -> slice:
        """The columns of ``layer`` (a gate point; see :attr:`layers`)."""
        i = self.layers.index(layer)
        return slice(self.offsets[i], self.offsets[i + 1])

    def layer_z(self, layer: str) -> np.ndarray:
        """Shape: (E, n_ℓ)."""
        return self.z[:, self.layer_slice(layer)]

    def layer_critical(self, layer: str) -> np.ndarray:
        """Shape: (E, n_ℓ) bool."""
        return self.critical[:, self.layer_slice(layer)]

    def layer_acti(self, layer: str) -> np.ndarray:
        """Shape: (E, n_ℓ)."""
        return self.acti[:, self.layer_slice(layer)]

    def row(self, role: str, target: int | None = None) -> int:
        """The row of ``role`` (``tar``: target ``target``, default the :attr:`representative`)."""
        if role == "adv":
            return ADV
        if role == "src":
            return SRC
        return FIRST_TARGET + (self.representative if target is None else int(target))

    # ------------------------------------------------------------------ targets
    @property
    def target_distances(self) -> np.ndarray:
        """Whole-network ‖z_adv − z_tar‖₂ per target (Eq. 5's distance). Shape: (K,)."""
        return np.linalg.norm(self.z[FIRST_TARGET:] - self.z[ADV], axis=1)

    @property
    def representative(self) -> int:
        """The target nearest the adversarial's datapath (spec-003 §1.2, paper §6.2.1): an index 0 … K−1."""
        return int(np.argmin(self.target_distances))

    def river_distances(self, target: int | None = None, rms: bool = True) -> tuple[np.ndarray, ...]:
        """(d1, d2, d3) per layer for one target (default the representative). Shape: three (L,)."""
        t = self.representative if target is None else int(target)
        if rms:
            return self.d1_rms[t], self.d2_rms, self.d3_rms[t]
        return self.d1[t], self.d2, self.d3[t]

    # ------------------------------------------------------------------ store layout
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON attrs for ``store.derived`` (read back by :meth:`from_arrays`)."""
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        attrs = {name: getattr(self, name) for name in _ATTRS}
        attrs["layers"], attrs["sizes"] = list(self.layers), list(self.sizes)
        return arrays, attrs

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> PairDatapaths:
        values: dict[str, Any] = {name: arrays[name] for name in _ARRAYS}
        values.update({name: attrs[name] for name in _ATTRS})
        values["layers"], values["sizes"] = tuple(attrs["layers"]), tuple(int(s) for s in attrs["sizes"])
        values["pair"], values["steps"], values["seed"] = int(attrs["pair"]), int(attrs["steps"]), int(attrs["seed"])
        missing = {f.name for f in fields(cls)} - set(values)
        if missing:
            raise KeyError(f"stored pair datapaths lack {sorted(missing)}")
        return cls(**values)


def layer_distances(a: np.ndarray, b: np.ndarray, sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer ℓ2 distance of gate vectors, raw and ÷√n_ℓ. Shape: a, b (..., n) → two (..., L)."""
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    raw = np.stack([np.linalg.norm(a[..., s:e] - b[..., s:e], axis=-1) for s, e in zip(bounds, bounds[1:])], axis=-1)
    return raw.astype(np.float32), (raw / np.sqrt(np.asarray(sizes, dtype=np.float64))).astype(np.float32)


def compute_pair_datapaths(model: AnalysedModel, pair: int, adversarial: torch.Tensor, source: torch.Tensor,
                           targets: torch.Tensor, target_rows: np.ndarray, target_dataset_index: np.ndarray, *,
                           lam: float = 0.1, gamma: float = 0.1, steps: int = 200, lr: float = 0.05,
                           tau: float = 0.5, seed: int = 0,
                           progress: Callable[[float, str], None] | None = None) -> PairDatapaths:
    """The chain adv → src → targets over the default gate points (spec-003 §1.2), with its views' data.

    Args:
        adversarial, source: the pair's images; targets: K clean images of the adversarial class.
        target_rows, target_dataset_index: where the targets come from (kept with the result).
        lam, gamma, steps, lr, tau, seed: λ̃, γ̃, T, Adam's step, the critical-set threshold, the seed.
        progress: ``progress(fraction, message)`` during the solver (every 10 steps).

    Shape:
        adversarial, source: (C, H, W) in [0, 1]; targets: (K, C, H, W).
    """
    started = time.perf_counter()
    layout = gate_layout(model)
    chain = datapath_chain(model, adversarial, source, targets, lam=lam, gamma=gamma, steps=steps, lr=lr, seed=seed,
                           tau=tau, progress=progress)
    images = torch.cat([adversarial[None], source[None], targets]).to(model.device, model.mean.dtype)
    paths = (chain.adv, chain.src, chain.tar)
    sets = (chain.adv_set, chain.src_set, chain.tar_set)
    critical = torch.cat([s.mask for s in sets])
    binary = binary_labels(model, images, layout, critical)
    with torch.no_grad():
        maxima = model.capture(images, list(layout.layers), reduce="max")
    acti = torch.cat([maxima[layer].reshape(len(images), -1) for layer in layout.layers], dim=1)
    z = torch.cat([p.z for p in paths]).numpy().astype(np.float32)
    d1, d1_rms = layer_distances(z[FIRST_TARGET:], z[SRC], layout.sizes)
    d2, d2_rms = layer_distances(z[ADV], z[SRC], layout.sizes)
    d3, d3_rms = layer_distances(z[FIRST_TARGET:], z[ADV], layout.sizes)
    return PairDatapaths(
        pair=int(pair), layers=tuple(layout.layers), sizes=tuple(int(s) for s in layout.sizes),
        target_rows=np.asarray(target_rows, dtype=np.int64),
        target_dataset_index=np.asarray(target_dataset_index, dtype=np.int64),
        z=z, critical=critical.numpy(), tau=torch.cat([s.tau for s in sets]).numpy().astype(np.float32),
        label_kept=torch.cat([s.label_kept for s in sets]).numpy(),
        flagged=torch.cat([s.flagged for s in sets]).numpy(),
        labels=torch.cat([p.labels for p in paths]).numpy().astype(np.int64),
        probs=torch.cat([p.probs for p in paths]).numpy().astype(np.float32),
        gated_probs=torch.cat([p.gated_probs for p in paths]).numpy().astype(np.float32),
        binary_pred=binary.numpy().astype(np.int64), acti=acti.detach().cpu().numpy().astype(np.float32),
        d1=d1, d2=d2, d3=d3, d1_rms=d1_rms, d2_rms=d2_rms, d3_rms=d3_rms,
        lam=float(lam), gamma=float(gamma), steps=int(steps), lr=float(lr), tau_requested=float(tau), seed=int(seed),
        seconds=float(time.perf_counter() - started))

