"""What :class:`~advlens.analysis.datapaths.DatapathAnalysis` returns besides
:class:`~advlens.analysis.datapaths_pair.PairDatapaths`: the example picker's table, the gate layers, a
contribution seen from one role, a channel's activation maps and its learned features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from advlens.analysis.datapaths_pair import ROLES
from advlens.datapaths import Contribution

ADVERSARIALNESS = "1 − softmax margin of the adversarial prediction (a proxy for AEVis's K-density score)"


@dataclass(frozen=True)
class DatapathExamples:
    """The store's pairs for the example picker (spec-003 §4 "Inputs").

    Attributes:
        adversarialness: the proxy ``1 − (p_adv[adv class] − max other p_adv)`` (see :data:`ADVERSARIALNESS`;
            near 1: barely adversarial, near 0: confidently wrong).
        stored: whether the pair's datapaths with these settings are in the store (fresh).
        class_names: names of the class ids.

    Shape:
        pair, label, adv_pred, dataset_index: (P,) int64; adversarialness: (P,) float64; stored: (P,) bool.
    """

    pair: np.ndarray
    dataset_index: np.ndarray
    label: np.ndarray
    adv_pred: np.ndarray
    adversarialness: np.ndarray
    stored: np.ndarray
    class_names: tuple[str, ...]
    score_label: str = ADVERSARIALNESS

    def medium(self, count: int) -> np.ndarray:
        """The ``count`` pairs of medium adversarialness the picker suggests: nearest the median score
        first (ties by pair id). Shape: (min(count, P),) int64."""
        order = np.lexsort((self.pair, np.abs(self.adversarialness - np.median(self.adversarialness))))
        return self.pair[order[:count]].astype(np.int64)


@dataclass(frozen=True)
class GateLayer:
    """One gate point: its name, its group (the block it belongs to; the river collapses a group into its
    last gate point), its maps and their columns in a gate vector (``start:stop``), its grid (h, w)."""

    name: str
    group: str
    channels: int
    start: int
    stop: int
    grid: tuple[int, int]


@dataclass(frozen=True)
class DatapathContribution:
    """Contribution of every map of ``source_layer`` to one target map's AOI, seen from one role.

    Attributes:
        contribution: the joint result for the examples adv, src, tar (the representative target).
        role: whose gates ``values`` and ``order`` are; ``values``: z of every source map (∈ [0, 1]);
        order: source maps by descending contribution; in_datapath: whether each map is in that
            role's critical set (the page marks contributors outside it).

    Shape:
        values: (n',) float32; order: (n',) int64; in_datapath: (n',) bool.
    """

    pair: int
    role: str
    target: int
    contribution: Contribution
    values: np.ndarray
    order: np.ndarray
    in_datapath: np.ndarray
    seconds: float


@dataclass(frozen=True)
class DatapathActivationMaps:
    """One channel's activation maps on adv, src and a target (the neuron level, spec-003 §4).

    Shape:
        maps: (3, h, w) float32, rows adv, src, tar; images: (3, C, H, W) float32 in [0, 1]; ``vmax`` the
        largest value of the three (one shared scale).
    """

    pair: int
    layer: str
    channel: int
    target: int
    maps: np.ndarray
    images: np.ndarray
    vmax: float
    roles: tuple[str, ...] = ROLES


@dataclass(frozen=True)
class DatapathFeatures:
    """A map's learned features from the ``features`` stage (None and ``problem`` when there are none)."""

    layer: str
    channel: int
    visualization: np.ndarray | None
    examples: Any
    problem: str | None
