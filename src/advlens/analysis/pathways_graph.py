"""``PathwayGraph``: the activation pathways of one class pair (spec-004 §1–§5) as a frozen record of arrays.

Nodes are the drawn neurons of every pathway layer (the four groups of spec-004 §3, plus pinned extra
neurons), edges the connections between drawn neurons of adjacent layers. The record holds no Dash
object and converts to and from plain arrays (:meth:`PathwayGraph.to_arrays` /
:meth:`PathwayGraph.from_arrays`), which is how the store keeps it (``store.derived("pathway-graph")``).

Sets (spec-004 §1): ``original`` and ``target`` are the benign true positives of the two classes;
``attacked(s)`` the sampled ``original`` images the model predicts as ``target`` under the attack at
strength ``eps[s]``. A set with fewer than :data:`MIN_IMAGES` images is flagged "too few images"; an
empty attacked set has NaN importances and influences.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

MIN_IMAGES = 5
"""Sets smaller than this are shown but flagged "too few images" (spec-004 §1)."""

PINNED = 4
"""Group id of a pinned neuron outside the four groups (the four groups are ``advlens.pathways.GROUPS``)."""

METHODS = ("kernel", "grad_x_act")
"""Influence estimators (spec-004 §5), indexed by ``PathwayGraph.layer_method``."""

_SCALARS = ("original", "target", "attack", "targeted", "k_benign", "k_attack", "max_images", "seed")
_TUPLES = ("layers", "attacks", "group_names")


@dataclass(frozen=True)
class PathwayGraph:
    """Neurons and connections of the pathways of ``original → target`` under ``attack``.

    Attributes:
        original, target: class ids; attack: the attack whose sweep made the attacked sets;
        targeted: whether the sweep was targeted toward ``target`` (else the untargeted sweep).
        layers: pathway layers, shallow → deep (L). attacks: the sweep's attacks (A), ``attack`` among them.
        group_names: names of the node groups (the four groups, then ``pinned``).
        k_benign, k_attack, max_images, seed: the settings that made the graph.

    Shape:
        eps: (E,) attack strengths (L∞, pixel scale [0, 1]), ascending.
        original_count, target_count: () int64 benign images of each class; attacked_count (A, E) int64.
        influence_images: (2 + E,) int64 images each set's influences are medians over (≤ max_images).
        channels: (L,) int64 channels of each layer.
        node_layer, node_channel, node_group: (M,) int64 — layer index, channel, group id.
        importance: (2, M) float32 importance (median of maxima) for original and target.
        attacked_importance: (A, E, M) float32 importance for attacked(s) of every attack (NaN: empty set).
        percentile: (2, M) and attacked_percentile (A, E, M) float32 rank percentile within the layer
            (rank / channels, 1 = most important), spec-004 §2.
        edge_source, edge_target: (Q,) int64 node indices (source in layer ℓ, target in layer ℓ + 1).
        influence: (2 + E, Q) float32 median influence over original, target and attacked(s) of ``attack``
            (NaN for an empty attacked set).
        layer_method: (L − 1,) int64 index into :data:`METHODS` of the estimator used between layers ℓ, ℓ + 1.
    """

    original: int
    target: int
    attack: str
    targeted: bool
    layers: tuple[str, ...]
    attacks: tuple[str, ...]
    group_names: tuple[str, ...]
    k_benign: int
    k_attack: int
    max_images: int
    seed: int
    eps: np.ndarray
    original_count: np.ndarray
    target_count: np.ndarray
    attacked_count: np.ndarray
    influence_images: np.ndarray
    channels: np.ndarray
    node_layer: np.ndarray
    node_channel: np.ndarray
    node_group: np.ndarray
    importance: np.ndarray
    attacked_importance: np.ndarray
    percentile: np.ndarray
    attacked_percentile: np.ndarray
    edge_source: np.ndarray
    edge_target: np.ndarray
    influence: np.ndarray
    layer_method: np.ndarray

    # ------------------------------------------------------------------ derived views
    @property
    def num_nodes(self) -> int:
        return int(len(self.node_layer))

    @property
    def num_edges(self) -> int:
        return int(len(self.edge_source))

    @property
    def attack_index(self) -> int:
        """Position of :attr:`attack` in :attr:`attacks`."""
        return self.attacks.index(self.attack)

    def counts(self, attack: str | None = None) -> np.ndarray:
        """Images per attacked set of ``attack`` (default: the graph's). Shape: (E,) int64."""
        return self.attacked_count[self.attacks.index(attack or self.attack)]

    def too_few(self, attack: str | None = None) -> dict[str, Any]:
        """Which sets have fewer than :data:`MIN_IMAGES` images: ``{"original": bool, "target": bool,
        "attacked": (E,) bool}``."""
        return {"original": bool(self.original_count < MIN_IMAGES), "target": bool(self.target_count < MIN_IMAGES),
                "attacked": self.counts(attack) < MIN_IMAGES}

    def attacked(self, attack: str | None = None) -> np.ndarray:
        """Node importance for attacked(s) of ``attack`` (default: the graph's). Shape: (E, M)."""
        return self.attacked_importance[self.attacks.index(attack or self.attack)]

    def excitation(self, attack: str | None = None) -> np.ndarray:
        """Node excitation ``importance[attacked(s)] − importance[original]`` (spec-004 §4; negative:
        inhibition). Shape: (E, M) float32, NaN where attacked(s) is empty."""
        return self.attacked(attack) - self.importance[0][None, :]

    def edge_excitation(self) -> np.ndarray:
        """Edge excitation: influence at strength s minus the benign (original) influence. Shape: (E, Q)."""
        return self.influence[2:] - self.influence[0][None, :]

    def nodes_of(self, layer: int) -> np.ndarray:
        """Node indices of layer ``layer`` (its position in :attr:`layers`). Shape: (m,) int64."""
        return np.flatnonzero(self.node_layer == layer)

    def node_index(self, layer: str, channel: int) -> int | None:
        """The node of ``(layer, channel)``, or None when that neuron is not drawn."""
        if layer not in self.layers:
            return None
        hit = np.flatnonzero((self.node_layer == self.layers.index(layer)) & (self.node_channel == int(channel)))
        return int(hit[0]) if hit.size else None

    # ------------------------------------------------------------------ storage
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON attrs (what ``store.derived(...).put`` takes)."""
        arrays, attrs = {}, {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SCALARS:
                attrs[f.name] = value
            elif f.name in _TUPLES:
                attrs[f.name] = list(value)
            else:
                arrays[f.name] = np.asarray(value)
        return arrays, attrs

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> PathwayGraph:
        """The graph :meth:`to_arrays` wrote (``KeyError`` when a field is missing)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in _SCALARS:
                values[f.name] = attrs[f.name]
            elif f.name in _TUPLES:
                values[f.name] = tuple(attrs[f.name])
            else:
                values[f.name] = np.asarray(arrays[f.name])
        return cls(**values)


__all__ = ["PathwayGraph", "MIN_IMAGES", "PINNED", "METHODS"]
