"""Neuron clustering (paper 001, §5.2.2): a hierarchy of the analysed layer's neurons for one pair.

Each neuron is described by its benign and adversarial RFs concatenated; the dissimilarity is the
L2 distance between those binary vectors (√ of the number of differing pixels). Alternatives:
``"rf_iou"`` (1 − IoU of the concatenated RFs; two empty RFs are identical, distance 0) and
``"activation_l2"`` (L2 between the concatenated raw feature maps). The hierarchy is
``scipy.cluster.hierarchy.linkage``; node ids follow SciPy: leaves 0 … K−1, merge n at id K + n.

Default linkage: ``"average"`` (UPGMA). It is valid for all three distances (``"ward"`` assumes
Euclidean ones), and its merge heights stay in the distance's unit (e.g. √pixels), which the
dendrogram shows; ``"ward"`` is available for the two L2 distances and gives more balanced trees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from advlens.measures._tensors import ArrayLike, as_tensor

logger = logging.getLogger(__name__)

METRICS = ("rf_l2", "rf_iou", "activation_l2")
EUCLIDEAN_METHODS = ("ward", "centroid", "median")
DEFAULT_METRIC = "rf_l2"
DEFAULT_METHOD = "average"


def neuron_features(benign: ArrayLike, adversarial: ArrayLike | None = None) -> torch.Tensor:
    """One row per neuron: its benign map (RF mask or feature map) and adversarial map, flattened and
    concatenated.

    Shape:
        benign, adversarial: (K, H, W); returns float (K, 2·H·W), or (K, H·W) without ``adversarial``.
    """
    first = as_tensor(benign)
    if first.ndim != 3:
        raise ValueError(f"expected one map per neuron (K, H, W), got shape {tuple(first.shape)}")
    parts = [first.reshape(first.shape[0], -1)]
    if adversarial is not None:
        second = as_tensor(adversarial, first.device)
        if second.shape != first.shape:
            raise ValueError(f"benign {tuple(first.shape)} and adversarial {tuple(second.shape)} maps differ")
        parts.append(second.reshape(second.shape[0], -1))
    dtype = torch.float32 if first.dtype == torch.bool else torch.float64
    return torch.cat([p.to(dtype) for p in parts], dim=1)


def neuron_distances(features: ArrayLike, metric: str = DEFAULT_METRIC) -> np.ndarray:
    """Condensed pairwise distances between neurons (SciPy's ``pdist`` layout).

    ``"rf_l2"`` and ``"rf_iou"`` expect binary features (RF masks) and are computed from one Gram
    matrix (exact: integer counts); ``"activation_l2"`` uses ``torch.cdist`` in float64.

    Shape:
        features: (K, F); returns float64 (K·(K−1)/2,).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = as_tensor(features)
    if metric == "activation_l2":
        x = x.to(torch.float64)
        square = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    else:
        x = x.to(torch.float32)
        if not torch.all((x == 0) | (x == 1)):
            raise ValueError(f"metric {metric!r} needs binary RF masks")
        gram = (x @ x.T).double()
        sizes = torch.diagonal(gram)
        if metric == "rf_l2":
            square = (sizes[:, None] + sizes[None, :] - 2 * gram).clamp(min=0).sqrt()
        else:
            union = sizes[:, None] + sizes[None, :] - gram
            square = torch.where(union > 0, 1.0 - gram / union.clamp(min=1), torch.zeros((), dtype=gram.dtype,
                                                                                         device=gram.device))
    square = square.cpu().numpy()
    np.fill_diagonal(square, 0.0)
    return squareform(0.5 * (square + square.T), checks=False)


def neuron_linkage(distances: np.ndarray, method: str = DEFAULT_METHOD, optimal_ordering: bool = False) -> np.ndarray:
    """SciPy linkage matrix of condensed neuron distances.

    Shape:
        distances: (K·(K−1)/2,); returns float64 (K−1, 4): merged ids, height, size.
    """
    condensed = np.asarray(distances, dtype=np.float64)
    if condensed.size == 0:
        return np.zeros((0, 4))
    return hierarchy.linkage(condensed, method=method, optimal_ordering=optimal_ordering)


def node_members(linkage: np.ndarray, nodes: int | Iterable[int]) -> np.ndarray:
    """The neurons (leaves) under one node, or under any of several nodes.

    Node ids follow SciPy: leaves 0 … K−1 are the neurons, merge n of the linkage is node K + n.

    Shape:
        linkage: (K−1, 4); returns int64 sorted unique neuron ids.
    """
    z = np.asarray(linkage)
    n_leaves = z.shape[0] + 1
    stack = [int(nodes)] if np.isscalar(nodes) else [int(n) for n in nodes]  # type: ignore[arg-type]
    members: list[int] = []
    for node in stack:
        if not 0 <= node <= 2 * n_leaves - 2:
            raise ValueError(f"node id {node} is outside 0 … {2 * n_leaves - 2}")
    while stack:
        node = stack.pop()
        if node < n_leaves:
            members.append(node)
        else:
            left, right = z[node - n_leaves, :2]
            stack.extend((int(left), int(right)))
    return np.unique(np.asarray(members, dtype=np.int64))


def combine_receptive_fields(rfs: ArrayLike, neurons: ArrayLike, op: str = "union") -> torch.Tensor:
    """Union or intersection of the RFs of a set of neurons (the Receptive Field View's toggle).

    An empty set of neurons gives an empty mask for both operations.

    Shape:
        rfs: (K, H, W) or (N, K, H, W) bool; neurons: (M,) ids; returns bool (H, W) or (N, H, W).
    """
    if op not in ("union", "intersection"):
        raise ValueError(f"op must be 'union' or 'intersection', got {op!r}")
    masks = as_tensor(rfs).bool()
    index = as_tensor(neurons, masks.device).long().reshape(-1)
    if index.numel() == 0:
        return torch.zeros(masks.shape[:-3] + masks.shape[-2:], dtype=torch.bool, device=masks.device)
    selected = masks.index_select(-3, index)
    return selected.any(dim=-3) if op == "union" else selected.all(dim=-3)


class NeuronClustering:
    """Hierarchical clustering of the analysed layer's neurons for one pair (scikit-learn style).

    Args:
        metric: ``"rf_l2"`` (default, paper 001), ``"rf_iou"`` or ``"activation_l2"``.
        method: SciPy linkage method (default ``"average"``; ``"ward"``, ``"centroid"`` and
            ``"median"`` only with the L2 metrics).
        optimal_ordering: reorder leaves so neighbours are most similar (slower).

    Attributes (after :meth:`fit`):
        distances_: condensed distances (K·(K−1)/2,); linkage_: (K−1, 4); leaves_: (K,) the
        dendrogram's left-to-right neuron order; n_neurons_: K.

    Shape:
        fit(benign, adversarial): RF masks (K, H, W) bool for the RF metrics, feature maps
        (K, h, w) for ``"activation_l2"``; ``adversarial`` may be None (benign only).
    """

    def __init__(self, metric: str = DEFAULT_METRIC, method: str = DEFAULT_METHOD,
                 optimal_ordering: bool = False) -> None:
        self.metric = metric
        self.method = method
        self.optimal_ordering = optimal_ordering

    def fit(self, benign: ArrayLike, adversarial: ArrayLike | None = None) -> NeuronClustering:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.method in EUCLIDEAN_METHODS and self.metric == "rf_iou":
            raise ValueError(f"linkage {self.method!r} needs Euclidean distances; use 'rf_l2' or 'activation_l2'")
        features = neuron_features(benign, adversarial)
        self.n_neurons_ = int(features.shape[0])
        self.distances_ = neuron_distances(features, self.metric)
        self.linkage_ = neuron_linkage(self.distances_, self.method, self.optimal_ordering)
        self.leaves_ = (hierarchy.leaves_list(self.linkage_).astype(np.int64) if self.n_neurons_ > 1
                        else np.arange(self.n_neurons_, dtype=np.int64))
        logger.debug("clustered %d neurons (%s, %s)", self.n_neurons_, self.metric, self.method)
        return self

    def members(self, nodes: int | Iterable[int]) -> np.ndarray:
        """Neurons under the node(s), sorted (see :func:`node_members`)."""
        return node_members(self.linkage_, nodes)

    def height(self, node: int) -> float:
        """Merge height of a node (0 for a leaf)."""
        return 0.0 if node < self.n_neurons_ else float(self.linkage_[node - self.n_neurons_, 2])
