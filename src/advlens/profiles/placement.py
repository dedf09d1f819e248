"""Placing new images on a fixed 1-D UMAP axis: UMAP's ``transform``, one image at a time.

umap-learn's ``AlignedUMAP`` has no ``transform`` (spec-002 §1.3). The spec's workaround sets each
layer mapper's ``embedding_`` to the aligned embedding and calls ``UMAP.transform``. This module does
the same computation from umap-learn's own building blocks (exact kNN to the background, the fuzzy
membership strengths, the weighted-average start, the SGD with the background fixed), so it needs
only the background activations and their aligned positions: a fit read back from a store places new
images without refitting.

One difference from ``UMAP.transform``, on purpose: umap-learn scales every edge's sampling rate by
the largest edge weight of the whole batch, so an image's position depends on which other images are
transformed with it. Here each image's weights are scaled by its own largest weight, which is what
``UMAP.transform`` does for that image alone: a position never depends on the batch (a control and an
adversarial with ε = 0 land on the same spot, in one call or in two).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from advlens.profiles._arrays import euclidean

# umap-learn is imported inside the functions: its import loads numba code (seconds), which only a fit
# or a placement needs.
DISTANCE_CHUNK = 256
"""New images per block of exact distances to the background (bounds memory to 256 × n floats)."""


@dataclass(frozen=True)
class PlacementParams:
    """The UMAP settings that decide where a new image lands (those of the fit).

    ``n_epochs`` is the fit's epoch count: like ``UMAP.transform``, placement runs ``n_epochs // 3``
    epochs at a quarter of the learning rate.
    """

    n_neighbors: int = 15
    min_dist: float = 0.1
    spread: float = 1.0
    n_epochs: int = 200
    learning_rate: float = 1.0
    repulsion_strength: float = 1.0
    negative_sample_rate: int = 5
    local_connectivity: float = 1.0
    transform_seed: int = 42


def place(new: np.ndarray, reference: np.ndarray, positions: np.ndarray,
          params: PlacementParams = PlacementParams()) -> np.ndarray:
    """1-D positions of new images against a fixed reference embedding (UMAP.transform per image).

    Reference rows whose position is NaN (points the fit left disconnected) are not used.

    Args:
        new: activations of the new images (one layer, flattened).
        reference: the background activations of the same layer.
        positions: the background's fitted (aligned) positions on this layer's axis.
        params: the fit's UMAP settings.

    Returns:
        float32 positions; NaN for an image with no reference neighbour (cannot happen with finite
        inputs and a Euclidean metric).

    Shape:
        new: (m, D); reference: (n, D); positions: (n,); returns (m,).
    """
    from umap.umap_ import compute_membership_strengths, init_graph_transform, smooth_knn_dist  # noqa: PLC0415

    valid = np.isfinite(positions)
    reference = reference[valid] if not valid.all() else reference
    embedding = np.ascontiguousarray(positions[valid], dtype=np.float32).reshape(-1, 1)
    k = min(params.n_neighbors, reference.shape[0])
    if len(new) == 0:
        return np.empty(0, dtype=np.float32)
    indices, dists = _nearest(new, reference, k)
    sigmas, rhos = smooth_knn_dist(dists, float(k), local_connectivity=max(0.0, params.local_connectivity - 1.0))
    rows, cols, vals, _ = compute_membership_strengths(indices, dists, sigmas, rhos, bipartite=True)
    graph = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(len(new), reference.shape[0]))
    csr = graph.tocsr()
    csr.eliminate_zeros()
    start = init_graph_transform(csr, embedding)
    return _optimise(start, embedding, graph, params)[:, 0]


def _nearest(new: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest reference rows of each new row, nearest first (int32, float32)."""
    indices = np.empty((len(new), k), dtype=np.int32)
    dists = np.empty((len(new), k), dtype=np.float32)
    for start in range(0, len(new), DISTANCE_CHUNK):
        block = euclidean(new[start:start + DISTANCE_CHUNK], reference)
        part = np.argpartition(block, k - 1, axis=1)[:, :k]
        part_d = np.take_along_axis(block, part, axis=1)
        order = np.argsort(part_d, axis=1, kind="stable")
        indices[start:start + len(block)] = np.take_along_axis(part, order, axis=1)
        dists[start:start + len(block)] = np.take_along_axis(part_d, order, axis=1)
    return indices, dists


def _optimise(start: np.ndarray, embedding: np.ndarray, graph: scipy.sparse.coo_matrix,
              params: PlacementParams) -> np.ndarray:
    """UMAP's transform SGD with the reference fixed, each image's edge weights scaled by its own
    largest one (so a position does not depend on the other images of the batch)."""
    from umap.layouts import optimize_layout_euclidean  # noqa: PLC0415
    from umap.umap_ import INT32_MAX, INT32_MIN, find_ab_params, make_epochs_per_sample  # noqa: PLC0415

    n_epochs = max(1, int(params.n_epochs // 3))
    data = graph.data.astype(np.float64)
    row_max = np.zeros(graph.shape[0])
    np.maximum.at(row_max, graph.row, data)
    data = np.divide(data, row_max[graph.row], out=np.zeros_like(data), where=row_max[graph.row] > 0)
    keep = data >= 1.0 / n_epochs
    head, tail, weight = graph.row[keep], graph.col[keep], data[keep]
    if weight.size == 0:
        return start
    a, b = find_ab_params(params.spread, params.min_dist)
    rng_state = np.random.RandomState(params.transform_seed).randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
    return optimize_layout_euclidean(
        np.ascontiguousarray(start, dtype=np.float32), embedding.copy(), head.astype(np.int32),
        tail.astype(np.int32), n_epochs, graph.shape[1], make_epochs_per_sample(weight, n_epochs), a, b,
        rng_state, params.repulsion_strength, params.learning_rate / 4.0, params.negative_sample_rate,
        parallel=False)
