"""The constrained chain adv → src → targets (paper 003 Eq. 4; spec-003 §1.2 "Chain order").

The adversarial image's datapath is extracted alone; the source image's is pulled towards it; every
target's is pulled towards both (targets are siblings, not constrained by each other, so each triplet
(src, adv, tar_k) is exactly an Eq. 4 chain of length 3 and the targets batch). Many adversarials can
be chained at once: row a of ``source`` belongs to row a of ``adversarial`` and ``targets[a]`` are its
targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from advlens.datapaths.critical import CriticalSet, critical_set
from advlens.datapaths.extraction import DEFAULT_BATCH, Datapaths, extract_datapaths
from advlens.errors import ConfigError
from advlens.models.adapter import AnalysedModel


@dataclass(frozen=True)
class DatapathChain:
    """Datapaths of A adversarials, their A sources and K targets each, and their critical sets.

    Attributes:
        adv, src: one row per adversarial; tar: rows a·K … a·K + K − 1 are adversarial a's targets.
        targets_per_adversarial: K.
        adv_set, src_set, tar_set: critical sets at τ (label-guarded when the chain was built with
            ``guard=True``).

    Shape:
        adv.z, src.z: (A, n); tar.z: (A·K, n).
    """

    adv: Datapaths
    src: Datapaths
    tar: Datapaths
    targets_per_adversarial: int
    adv_set: CriticalSet
    src_set: CriticalSet
    tar_set: CriticalSet

    def target_distances(self) -> torch.Tensor:
        """Whole-network ‖z_adv − z_tar‖₂ (Eq. 5's distance). Shape: (A, K)."""
        tar = self.tar.z.view(len(self.adv), self.targets_per_adversarial, -1)
        return torch.linalg.vector_norm(tar - self.adv.z.unsqueeze(1), dim=2)

    def representative(self) -> torch.Tensor:
        """Per adversarial, the index (0…K−1) of its target nearest to it (§6.2.1). Shape: (A,)."""
        return self.target_distances().argmin(dim=1)


def _as_batches(adversarial: torch.Tensor, source: torch.Tensor, targets: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    for name, value in (("adversarial", adversarial), ("source", source), ("targets", targets)):
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"{name} must be a tensor of images in [0, 1], got {type(value).__name__}")
    if adversarial.ndim == 3:
        adversarial = adversarial.unsqueeze(0)
    if source.ndim == 3:
        source = source.unsqueeze(0)
    if targets.ndim == 4 and len(adversarial) == 1:
        targets = targets.unsqueeze(0)
    if targets.ndim != 5:
        raise ConfigError(f"targets must have shape (A, K, C, H, W) (or (K, C, H, W) for one adversarial), "
                          f"got {tuple(targets.shape)}")
    if not (len(adversarial) == len(source) == len(targets)):
        raise ConfigError(f"{len(adversarial)} adversarial images, {len(source)} sources and {len(targets)} target "
                          "groups: each adversarial needs its own source and target group")
    if targets.shape[1] < 1:
        raise ConfigError("each adversarial needs at least one target image")
    return adversarial, source, targets


def datapath_chain(model: AnalysedModel, adversarial: torch.Tensor, source: torch.Tensor, targets: torch.Tensor,
                   layers: Sequence[str] | None = None, *, lam: float = 0.1, gamma: float = 0.1, steps: int = 200,
                   lr: float = 0.05, seed: int = 0, optimizer: str = "adam", tau: float = 0.5, guard: bool = True,
                   batch_size: int = DEFAULT_BATCH,
                   progress: Callable[[float, str], None] | None = None) -> DatapathChain:
    """Extract the chain adv → src → targets (γ̃ = 0: three independent extractions, bit for bit).

    Args:
        adversarial, source: the adversarial images and the clean images they were made from.
        targets: K clean images of the adversarial class per adversarial.
        layers, lam, gamma, steps, lr, seed, optimizer, batch_size: as in :func:`extract_datapaths`.
        tau, guard: critical-set threshold and whether to apply the label guard.
        progress: called as ``progress(fraction, message)`` every ``PROGRESS_EVERY`` solver steps and when
            a phase ends; the three phases (adv, src, targets) are weighted by a rough cost of their
            batches (√images), the guard is the last 5%.

    Shape:
        adversarial, source: (A, C, H, W) or (C, H, W); targets: (A, K, C, H, W) or (K, C, H, W) when A = 1.
    """
    adversarial, source, targets = _as_batches(adversarial, source, targets)
    count, per = len(adversarial), targets.shape[1]
    options = dict(lam=lam, gamma=gamma, steps=steps, lr=lr, seed=seed, optimizer=optimizer, batch_size=batch_size)
    flat_targets = targets.reshape(count * per, *targets.shape[2:])
    for images in (adversarial, source, flat_targets):
        model.check_input(images)
    report = _phases(progress, (len(adversarial), len(source), len(flat_targets)), steps)
    adv = extract_datapaths(model, adversarial, layers, progress=report(0, "adversarial"), **options)
    src = extract_datapaths(model, source, layers, references=[adv], progress=report(1, "source"), **options)
    tar = extract_datapaths(model, flat_targets, layers,
                            references=[adv.repeat_interleave(per), src.repeat_interleave(per)],
                            progress=report(2, f"{len(flat_targets)} target(s)"), **options)

    def sets(paths: Datapaths, images: torch.Tensor) -> CriticalSet:
        return critical_set(paths, tau, model=model, images=images) if guard else critical_set(paths, tau)

    chain = DatapathChain(adv, src, tar, per, sets(adv, adversarial), sets(src, source), sets(tar, flat_targets))
    if progress is not None:
        progress(1.0, "datapaths done")
    return chain


PROGRESS_EVERY = 10
"""Solver steps between two progress reports of :func:`datapath_chain`."""
GUARD_SHARE = 0.05


def _phases(progress: Callable[[float, str], None] | None, counts: tuple[int, ...], steps: int):
    """``report(phase, what)`` → an ``extract_datapaths`` progress callback mapping its steps into the
    phase's share of the chain (None without ``progress``)."""
    weights = [math.sqrt(max(count, 1)) for count in counts]
    total = sum(weights) / (1.0 - GUARD_SHARE)
    starts = [sum(weights[:i]) / total for i in range(len(weights))]

    def report(phase: int, what: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None

        def callback(done: int, of: int) -> None:
            if done % PROGRESS_EVERY == 0 or done == of:
                fraction = starts[phase] + weights[phase] / total * done / max(of, 1)
                progress(min(fraction, 1.0), f"datapath of the {what}: step {done} of {of}")
        return callback
    return report
