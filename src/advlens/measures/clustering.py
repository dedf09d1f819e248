"""Neuron clustering (paper 001, §5.2.2): a hierarchy of the analysed layer's neurons for one pair.

Dissimilarities (:data:`METRICS`), each on a neuron's benign and adversarial sides concatenated:

* ``"rf_l2"`` (default, §3.2 + §5.2.2): L2 distance between the neurons' *receptive fields* — the RF
  is the masked image (the image × the neuron's binarized upsampled map), so two neurons are close
  when they reveal the same pixels with the same values; a dead neuron's RF is an all-zero image.
* ``"mask_l2"``: L2 between the binary masks (√ of the number of differing pixels): the RFs' shapes
  only, blind to what they show (a mask over a dark background counts as much as one over the object).
* ``"rf_iou"``: 1 − IoU of the concatenated masks (two empty masks are identical, distance 0).
* ``"activation_l2"``: L2 between the raw feature maps (§5.2.2's alternative).

The hierarchy is ``scipy.cluster.hierarchy.linkage``; node ids follow SciPy: leaves 0 … K−1, merge n
at id K + n. Linkages offered: ``"ward"``, ``"complete"``, ``"average"`` (and SciPy's ``"single"``,
``"weighted"``, ``"centroid"``, ``"median"``); Ward, centroid and median need Euclidean distances,
so ``"rf_iou"`` uses :data:`DEFAULT_IOU_METHOD`.

Default linkage: ``"ward"`` (:data:`DEFAULT_METHOD`), chosen by what a person can read in the
Neuron Cluster View. Judged on dendrograms of the demo model's 256 neurons for pairs of the full
Fashion-MNIST store (RF-image L2; 31% of the neurons, on average, have empty RFs on both images and
form one flat group at height 0 under every linkage): with average linkage the tree is one long chain —
54% of its merges add a single neuron to a cluster of ≥ 10, and cut into 4 groups it gives one group
of 93% of the neurons plus ~2 groups of fewer than 5 (outliers), so a click selects either a few
outliers or nearly everything; complete linkage is better but lopsided (82%, 0.5 tiny groups); Ward merges the
clusters that add the least within-cluster variance and draws a few well separated groups of useful
size near the top (largest 74%, no tiny ones; 30 pairs; ``benchmarks/dendrogram_shapes.py``), with
long vertical links as obvious cut points — the top-down and bottom-up exploration of Figs. 7 and 8.
Its heights are not distances but the growth of the within-cluster spread (SciPy's Ward height), in
the metric's unit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist, squareform

from advlens.measures._tensors import ArrayLike, as_tensor
from advlens.measures.receptive_fields import apply_receptive_field

logger = logging.getLogger(__name__)

METRICS = ("rf_l2", "mask_l2", "rf_iou", "activation_l2")
MASK_METRICS = ("mask_l2", "rf_iou")
"""Metrics computed on binary RF masks; ``rf_l2`` takes masked images, ``activation_l2`` feature maps."""
METHODS = ("ward", "complete", "average", "single", "weighted", "centroid", "median")
EUCLIDEAN_METHODS = ("ward", "centroid", "median")
DEFAULT_METRIC = "rf_l2"
DEFAULT_METHOD = "ward"
DEFAULT_IOU_METHOD = "complete"
"""Linkage for ``"rf_iou"`` when none is given (Ward needs Euclidean distances)."""


def default_method(metric: str) -> str:
    """The linkage used for ``metric`` when none is given: :data:`DEFAULT_METHOD`, or
    :data:`DEFAULT_IOU_METHOD` for the non-Euclidean ``"rf_iou"``."""
    return DEFAULT_IOU_METHOD if metric == "rf_iou" else DEFAULT_METHOD


def neuron_features(benign: ArrayLike, adversarial: ArrayLike | None = None) -> torch.Tensor:
    """One row per neuron: its benign item (RF image, RF mask or feature map) and adversarial item,
    flattened and concatenated.

    Shape:
        benign, adversarial: (K, ...) e.g. masks (K, H, W), RF images (K, C, H, W);
        returns float (K, 2·F), or (K, F) without ``adversarial`` (F: elements per item).
    """
    first = as_tensor(benign)
    if first.ndim < 2:
        raise ValueError(f"expected one map per neuron (K, ...), got shape {tuple(first.shape)}")
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

    ``"mask_l2"`` and ``"rf_iou"`` expect binary features (RF masks) and are computed from one Gram
    matrix (exact: integer counts); ``"rf_l2"`` and ``"activation_l2"`` are SciPy's Euclidean
    ``pdist`` in float64 (identical rows are exactly 0 apart).

    Shape:
        features: (K, F); returns float64 (K·(K−1)/2,).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = as_tensor(features)
    if metric not in MASK_METRICS:
        return pdist(x.detach().cpu().to(torch.float64).numpy(), "euclidean")
    x = x.to(torch.float32)
    if not torch.all((x == 0) | (x == 1)):
        raise ValueError(f"metric {metric!r} needs binary RF masks")
    gram = (x @ x.T).double()
    sizes = torch.diagonal(gram)
    if metric == "mask_l2":
        square = (sizes[:, None] + sizes[None, :] - 2 * gram).clamp(min=0).sqrt()
    else:
        union = sizes[:, None] + sizes[None, :] - gram
        square = torch.where(union > 0, 1.0 - gram / union.clamp(min=1), torch.zeros((), dtype=gram.dtype,
                                                                                     device=gram.device))
    square = square.cpu().numpy()
    np.fill_diagonal(square, 0.0)
    return squareform(0.5 * (square + square.T), checks=False)


def neuron_linkage(distances: np.ndarray, method: str = DEFAULT_METHOD, optimal_ordering: bool = False) -> np.ndarray:
    """SciPy linkage matrix of condensed neuron distances (``scipy.cluster.hierarchy.linkage``).

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


def rf_images(image: ArrayLike, masks: ArrayLike) -> torch.Tensor:
    """The RFs of §3.2 as images: ``image`` × each neuron's binary mask (the image is resized
    bilinearly to the mask size first when they differ). What ``"rf_l2"`` compares.

    Shape:
        image: (C, H_in, W_in) in [0, 1]; masks: (K, H, W) bool; returns float32 (K, C, H, W).
    """
    return apply_receptive_field(image, masks, "mask")


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
        metric: one of :data:`METRICS` (default ``"rf_l2"``: L2 between the RF images, paper 001).
        method: SciPy linkage, one of :data:`METHODS`; default (None): :func:`default_method` —
            ``"ward"``, or ``"complete"`` for ``"rf_iou"``. Ward, centroid and median need an L2 metric.
        optimal_ordering: reorder leaves so neighbours are most similar (slower).

    Attributes (after :meth:`fit`):
        distances_: condensed distances (K·(K−1)/2,); linkage_: (K−1, 4); leaves_: (K,) the
        dendrogram's left-to-right neuron order; n_neurons_: K; method_: the linkage used.

    Shape:
        fit(benign, adversarial): RF images (K, C, H, W) float for ``"rf_l2"`` (see
        :func:`rf_images`), RF masks (K, H, W) bool for ``"mask_l2"`` / ``"rf_iou"``, feature maps
        (K, h, w) for ``"activation_l2"``; ``adversarial`` may be None (benign only).
    """

    def __init__(self, metric: str = DEFAULT_METRIC, method: str | None = None,
                 optimal_ordering: bool = False) -> None:
        self.metric = metric
        self.method = method
        self.optimal_ordering = optimal_ordering

    def fit(self, benign: ArrayLike, adversarial: ArrayLike | None = None) -> NeuronClustering:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        method = default_method(self.metric) if self.method is None else self.method
        if method not in METHODS:
            raise ValueError(f"linkage method must be one of {METHODS}, got {method!r}")
        if method in EUCLIDEAN_METHODS and self.metric == "rf_iou":
            raise ValueError(f"linkage {method!r} needs Euclidean distances; use an L2 metric or another "
                             "linkage (complete, average) with 'rf_iou'")
        features = neuron_features(benign, adversarial)
        self.method_ = method
        self.n_neurons_ = int(features.shape[0])
        self.distances_ = neuron_distances(features, self.metric)
        self.linkage_ = neuron_linkage(self.distances_, method, self.optimal_ordering)
        self.leaves_ = (hierarchy.leaves_list(self.linkage_).astype(np.int64) if self.n_neurons_ > 1
                        else np.arange(self.n_neurons_, dtype=np.int64))
        logger.debug("clustered %d neurons (%s, %s)", self.n_neurons_, self.metric, method)
        return self

    def members(self, nodes: int | Iterable[int]) -> np.ndarray:
        """Neurons under the node(s), sorted (see :func:`node_members`)."""
        return node_members(self.linkage_, nodes)

    def height(self, node: int) -> float:
        """Merge height of a node (0 for a leaf)."""
        return 0.0 if node < self.n_neurons_ else float(self.linkage_[node - self.n_neurons_, 2])
