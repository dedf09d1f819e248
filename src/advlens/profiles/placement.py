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

from advlens.profiles._arrays import bandwidth_search, gram_distances

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
    from umap.umap_ import init_graph_transform  # noqa: PLC0415

    valid = np.isfinite(positions)
    reference = reference[valid] if not valid.all() else reference
    embedding = np.ascontiguousarray(positions[valid], dtype=np.float32).reshape(-1, 1)
    k = min(params.n_neighbors, reference.shape[0])
    if len(new) == 0:
        return np.empty(0, dtype=np.float32)
    indices, dists = _nearest(new, reference, k)
    vals = membership_strengths(dists, smooth_knn_sigma(dists, k))
    rows = np.repeat(np.arange(len(new), dtype=np.int32), k)
    graph = scipy.sparse.coo_matrix((vals.reshape(-1), (rows, indices.reshape(-1))),
                                    shape=(len(new), reference.shape[0]))
    csr = graph.tocsr()
    csr.eliminate_zeros()
    start = init_graph_transform(csr, embedding)
    return _optimise(start, embedding, graph, params)[:, 0]


def smooth_knn_sigma(dists: np.ndarray, k: int, n_iter: int = 64) -> np.ndarray:
    """Each row's bandwidth σ with ``Σ_{j ≥ 1} exp(−d_j / σ) = log2(k)``: umap-learn's
    ``smooth_knn_dist`` as ``UMAP.transform`` calls it (local connectivity 0, so ρ = 0; float32 binary
    search, the nearest neighbour left out of the sum, σ floored at 1e-3 × the mean distance), vectorised
    over rows in NumPy: no numba compilation, and the floor uses the row's own mean (umap-learn: the
    batch's), so that a bandwidth does not depend on the batch.

    Shape: dists (m, k) sorted ascending; returns float32 (m,).
    """
    dists = np.asarray(dists, dtype=np.float32)
    target = float(np.log2(k))  # float64, as umap-learn compares its float32 sums with it
    mid = bandwidth_search(dists[:, 1:], target, n_iter, 1e-5)
    floor = np.float32(1e-3) * dists.mean(axis=1, dtype=np.float32)
    return np.maximum(mid, floor).astype(np.float32)


def membership_strengths(dists: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Fuzzy membership ``exp(−d / σ)`` of each new image to each of its neighbours (1 where d = 0 or
    σ = 0): umap-learn's ``compute_membership_strengths`` for a bipartite graph with ρ = 0.

    Shape: dists (m, k); sigmas (m,); returns float32 (m, k).
    """
    dists = np.asarray(dists, dtype=np.float32)
    sigma = np.asarray(sigmas, dtype=np.float32)[:, None]
    safe = np.where(sigma > 0, sigma, np.float32(1.0))
    vals = np.exp(-(dists / safe)).astype(np.float32)
    return np.where((dists <= 0) | (sigma == 0), np.float32(1.0), vals).astype(np.float32)


def _nearest(new: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest reference rows of each new row, nearest first (int32, float32), ties in row order.

    Distances from float32 Gram products of centred rows (:func:`~advlens.profiles._arrays.gram_distances`),
    as the fit finds the background's neighbours: float64 distances cost seconds per new pair on the demo
    model's layers (a float64 copy of the whole background) for the same neighbour sets.
    """
    indices = np.empty((len(new), k), dtype=np.int32)
    dists = np.empty((len(new), k), dtype=np.float32)
    for start in range(0, len(new), DISTANCE_CHUNK):
        block = gram_distances(new[start:start + DISTANCE_CHUNK], reference)
        order = np.argsort(block, axis=1, kind="stable")[:, :k]
        indices[start:start + len(block)] = order
        dists[start:start + len(block)] = np.take_along_axis(block, order, axis=1)
    return indices, dists


def _optimise(initial: np.ndarray, embedding: np.ndarray, graph: scipy.sparse.coo_matrix,
              params: PlacementParams) -> np.ndarray:
    """UMAP's transform SGD with the reference fixed; each image's edges are thresholded and scheduled
    against its own largest weight, in float32 as umap-learn does for a batch of one (so a position does
    not depend on the other images of the batch). Shape: graph (m, n) COO in row order."""
    from umap.umap_ import INT32_MAX, INT32_MIN, find_ab_params, make_epochs_per_sample  # noqa: PLC0415

    n_epochs = max(1, int(params.n_epochs // 3))
    data = graph.data.astype(np.float32)
    heads, tails, schedule = [], [], []
    bounds = np.flatnonzero(np.diff(graph.row, prepend=-1, append=graph.shape[0] + 1))
    for start, end in zip(bounds[:-1], bounds[1:]):  # each image as UMAP.transform treats a batch of one
        weight = data[start:end]
        keep = ~(weight < weight.max() / float(n_epochs))
        if weight.max() <= 0 or not keep.any():
            continue
        heads.append(graph.row[start:end][keep])
        tails.append(graph.col[start:end][keep])
        schedule.append(make_epochs_per_sample(weight[keep], n_epochs))
    if not heads:
        return initial
    head, tail, epochs_per_sample = np.concatenate(heads), np.concatenate(tails), np.concatenate(schedule)
    a, b = find_ab_params(params.spread, params.min_dist)
    rng_state = np.random.RandomState(params.transform_seed).randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
    return _descend(np.ascontiguousarray(initial, dtype=np.float32), embedding.copy(), head.astype(np.int32),
                    tail.astype(np.int32), n_epochs, graph.shape[1], epochs_per_sample, float(a), float(b),
                    rng_state, params.repulsion_strength, params.learning_rate / 4.0, params.negative_sample_rate)


_EPOCH = None


def _epoch_kernel():
    """umap-learn's SGD epoch (``_optimize_layout_euclidean_single_epoch``, what ``UMAP.transform`` runs),
    compiled once per process with numba's on-disk cache, without ``parallel`` as ``UMAP.transform``
    runs it for a seeded mapper."""
    global _EPOCH  # noqa: PLW0603 - a compiled function, built on first use
    if _EPOCH is None:
        import numba  # noqa: PLC0415
        from umap.layouts import _optimize_layout_euclidean_single_epoch  # noqa: PLC0415

        _EPOCH = numba.njit(_optimize_layout_euclidean_single_epoch, fastmath=True, parallel=False, cache=True)
    return _EPOCH


def _descend(head_embedding: np.ndarray, tail_embedding: np.ndarray, head: np.ndarray, tail: np.ndarray,
             n_epochs: int, n_vertices: int, epochs_per_sample: np.ndarray, a: float, b: float,
             rng_state: np.ndarray, gamma: float, initial_alpha: float, negative_sample_rate: float) -> np.ndarray:
    """umap-learn's ``optimize_layout_euclidean`` (no densMAP, reference fixed) with the cached kernel: the
    same epochs, schedules and per-sample random states. Shape: head_embedding (m, 1), updated and returned."""
    epochs_per_negative_sample = epochs_per_sample / negative_sample_rate
    epoch_of_next_negative_sample = epochs_per_negative_sample.copy()
    epoch_of_next_sample = epochs_per_sample.copy()
    rng_state_per_sample = (np.full((head_embedding.shape[0], len(rng_state)), rng_state, dtype=np.int64)
                            + head_embedding[:, 0].astype(np.float64).view(np.int64).reshape(-1, 1))
    unused = np.zeros(1, dtype=np.float32)  # the densMAP arrays
    epoch = _epoch_kernel()
    alpha = initial_alpha
    for n in range(n_epochs):
        epoch(head_embedding, tail_embedding, head, tail, n_vertices, epochs_per_sample, a, b, rng_state_per_sample,
              gamma, head_embedding.shape[1], False, alpha, epochs_per_negative_sample,
              epoch_of_next_negative_sample, epoch_of_next_sample, n, False, unused, unused, 0.0, 0.0, 0.0, 0.0,
              unused, unused, 0.0)
        alpha = initial_alpha * (1.0 - (float(n) / float(n_epochs)))
    return head_embedding
