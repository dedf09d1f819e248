"""Activation profiles: one aligned 1-D UMAP axis per layer (paper 002 §4.3; spec-002 §1.3).

Each image's activation profile is its position on every selected layer's axis. The axes come from
umap-learn's aligned UMAP (``AlignedUMAP``) fitted on background activations only, with identity
relations (the same images in every layer) so that clusters keep their places from axis to axis and a
change between layers shows as movement. New images (the foreground pair) are placed on the fitted axes
by UMAP's transform against the fixed background positions (:mod:`advlens.profiles.placement`), which
needs the background activations and positions only: a fit kept in a store is restored with
:meth:`ActivationProfiles.from_embeddings` and places new images without refitting (refits are not
reproducible bit for bit, spec-002 §5).

The fit runs ``AlignedUMAP.fit``'s steps with umap-learn's own parts where they are cheap and NumPy
where umap-learn's are costly to compile (:func:`aligned_layout`); ``AlignedUMAP`` itself spends
minutes compiling numba code in every process (its per-layer ``UMAP.fit`` compiles parallel kernels,
then it compiles its SGD anew on every call) and fits a full per-layer UMAP embedding it throws away:

* exact k nearest neighbours of each layer from BLAS distances (:func:`nearest_neighbours`; UMAP's
  ``fast_knn_indices`` on a precomputed matrix, a stable sort of each row);
* each layer's fuzzy graph in NumPy (:func:`fuzzy_graph`: ``smooth_knn_dist``,
  ``compute_membership_strengths`` and the fuzzy union of ``fuzzy_simplicial_set``, then the
  pruning ``UMAP.fit`` applies to ``graph_`` in place: weights below max / n_epochs become explicit
  zeros);
* the Jaccard overlap of each point's neighbourhoods in the layers of its window
  (:func:`neighbourhood_overlap`, AlignedUMAP's ``build_neighborhood_similarities`` for identity
  relations) with SciPy sparse products;
* umap-learn's ``spectral_layout`` per layer, scaled to ±10 and sign-aligned to the previous layer
  (the 1-D Procrustes step);
* umap-learn's aligned SGD epoch (``_optimize_layout_aligned_euclidean_single_epoch``) compiled once
  with numba's on-disk cache and without ``parallel`` (it has no parallel loop), fed padded arrays in
  place of numba typed lists (a padded edge is never due): the same updates in the same order.

Given the same graphs, initial layout and seed, the SGD gives AlignedUMAP's embedding bit for bit
(tests/test_profiles_fit.py); the graphs agree with UMAP's to float32 rounding, and a near-degenerate
spectral start can turn on such a difference, so fits are compared by quality invariants only.
Unlike ``AlignedUMAP``, ``random_state`` seeds the layout (AlignedUMAP seeds it with its fixed
``transform_seed`` 42), the SGD's curve parameters follow ``min_dist`` (AlignedUMAP's joint SGD keeps
those of 0.1, the default) and a graph with several components is laid out against the activations
rather than the distance matrix.

The vertical position carries no meaning of its own: only distances along an axis and the positions of
the background groups do (paper 002 §6).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse

from advlens.errors import ConfigError
from advlens.profiles._arrays import ArrayLike, as_array, bandwidth_search, layer_stack, positive_int, real
from advlens.profiles.placement import PlacementParams, place

logger = logging.getLogger(__name__)

RECOMMENDED_BACKGROUND = 1000
"""Below this many background images profiles may not be representative (paper 002 §6; G-26)."""
NEIGHBOUR_BLOCK = 4096
"""Rows per block of exact distances in :func:`nearest_neighbours` (bounds memory to 4096 × n floats)."""
SMOOTH_K_TOLERANCE = 1e-5
MIN_K_DIST_SCALE = 1e-3
NEGATIVE_SAMPLE_RATE = 5.0
REPULSION_STRENGTH = 1.0  # UMAP's gamma
SGD_REPORTS = 10
"""Progress reports during the SGD (one per tenth of the epochs)."""

Progress = Callable[[int, int, str], None]


# ------------------------------------------------------------------------------------- the graphs

def nearest_neighbours(layer: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest rows of every row, itself first (distance exactly 0), ties in row order.

    What UMAP computes on a precomputed distance matrix (``fast_knn_indices``: a stable sort of each
    row). The distances come from one float32 Gram matrix of the mean-centred rows
    (``|x|² + |y|² − 2 x·y``; a single BLAS ``syrk`` for n ≤ :data:`NEIGHBOUR_BLOCK`, blocks of rows
    above): 3–5× faster than float64 on the demo model's layers, with the same neighbour sets
    (benchmarks/profiles_fit.py measures the overlap with float64 distances).

    Shape: layer (n, D); returns int32 indices and float32 distances, both (n, k).
    """
    n = len(layer)
    layer = np.asarray(layer, dtype=np.float32)
    centred = layer - layer.mean(axis=0, dtype=np.float64).astype(np.float32)
    squared = np.einsum("ij,ij->i", centred, centred, dtype=np.float32)
    indices = np.empty((n, k), dtype=np.int32)
    dists = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, NEIGHBOUR_BLOCK):
        rows = centred[start:start + NEIGHBOUR_BLOCK]
        gram = centred @ centred.T if len(rows) == n else rows @ centred.T
        block = squared[start:start + len(rows), None] + squared[None, :] - np.float32(2.0) * gram
        np.sqrt(np.maximum(block, 0.0, out=block), out=block)
        block[np.arange(len(rows)), start + np.arange(len(rows))] = 0.0
        order = np.argsort(block, axis=1, kind="stable")[:, :k]
        indices[start:start + len(rows)] = order
        dists[start:start + len(rows)] = np.take_along_axis(block, order, axis=1)
    return indices, dists


def smooth_knn_dist(dists: np.ndarray, k: int, n_iter: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Each point's bandwidth σ and nearest-neighbour distance ρ: umap-learn's ``smooth_knn_dist`` with
    ``local_connectivity`` 1, vectorised over points (float32 binary search for
    ``Σ_{j ≥ 1} exp(−max(d_j − ρ, 0) / σ) = log2(k)``, σ floored at 1e-3 × the mean distance: the point's
    own when ρ > 0, else all points').

    Shape: dists (n, k) ascending, the point itself first; returns float32 σ (n,) and ρ (n,).
    """
    dists = np.asarray(dists, dtype=np.float32)
    n = len(dists)
    target = float(np.log2(k))
    positive = dists > 0
    rho = np.where(positive.any(axis=1), dists[np.arange(n), np.argmax(positive, axis=1)], 0).astype(np.float32)
    mid = bandwidth_search(dists[:, 1:] - rho[:, None], target, n_iter, SMOOTH_K_TOLERANCE)
    floor = np.where(rho > 0, MIN_K_DIST_SCALE * dists.mean(axis=1), MIN_K_DIST_SCALE * dists.mean())
    return np.maximum(mid, floor).astype(np.float32), rho


def fuzzy_graph(indices: np.ndarray, dists: np.ndarray, n_epochs: int) -> scipy.sparse.csr_matrix:
    """A layer's UMAP graph as ``UMAP.fit`` leaves it in ``graph_``: memberships ``exp(−(d − ρ) / σ)``
    (1 within ρ, 0 to itself), the fuzzy union ``A + Aᵀ − A∘Aᵀ``, then weights below max / n_epochs set to
    explicit zeros (UMAP's embedding step prunes them in place; AlignedUMAP still counts them as
    neighbours for the overlap and samples them as attractive edges every epoch).

    Shape: indices, dists (n, k) from :func:`nearest_neighbours`; returns (n, n) float32 CSR.
    """
    n, k = indices.shape
    sigmas, rhos = smooth_knn_dist(dists, k)
    gaps = dists - rhos[:, None]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        values = np.exp(-(gaps / sigmas[:, None])).astype(np.float32)
    values = np.where((gaps <= 0) | (sigmas[:, None] == 0), np.float32(1.0), values)
    values = np.where(indices == np.arange(n)[:, None], np.float32(0.0), values).astype(np.float32)
    rows = np.repeat(np.arange(n, dtype=np.int32), k)
    memberships = scipy.sparse.coo_matrix((values.ravel(), (rows, indices.ravel())), shape=(n, n))
    memberships.eliminate_zeros()
    transpose = memberships.transpose()
    graph = (memberships + transpose - memberships.multiply(transpose)).tocsr()
    graph.eliminate_zeros()
    graph.data[graph.data < graph.data.max() / float(n_epochs)] = 0.0
    return graph


def identity_relations(n_layers: int, n: int, window: int) -> np.ndarray:
    """AlignedUMAP's expanded relations for identity relations (umap-learn's ``expand_relations``, plain
    Python): entry ``[i, window + o, k]`` is k where layer i relates to layer i + o, else −1. As in
    umap-learn, a layer's forward relations stop one layer short of the last one (layer i + o = L − 1
    is related backwards only) and the centre is −1.

    Shape: returns int32 (L, 2·window + 1, n).
    """
    from umap.aligned_umap import expand_relations  # noqa: PLC0415

    return expand_relations([{k: k for k in range(n)}] * (n_layers - 1), window).astype(np.int32) \
        if n_layers > 1 else np.full((1, 2 * window + 1, n), -1, dtype=np.int32)


def neighbourhood_overlap(graphs: Sequence[scipy.sparse.csr_matrix], relations: np.ndarray) -> np.ndarray:
    """The alignment weights: for each point, layer and window offset, the Jaccard overlap of its graph
    neighbours (stored entries, explicit zeros included) in the two layers, 1 when both are empty, 0 where
    the relation is −1 (AlignedUMAP's ``build_neighborhood_similarities`` for identity relations).

    Shape: graphs L × (n, n); relations (L, W, n); returns float32 (L, W, n).
    """
    window = (relations.shape[1] - 1) // 2
    structure = [scipy.sparse.csr_matrix((np.ones(len(g.indices)), g.indices, g.indptr), shape=g.shape)
                 for g in graphs]
    degree = [np.diff(g.indptr) for g in graphs]
    weights = np.zeros(relations.shape, dtype=np.float32)
    for i in range(len(graphs)):
        for j in range(relations.shape[1]):
            other = i + j - window
            if j == window or not 0 <= other < len(graphs):
                continue
            shared = np.asarray(structure[i].multiply(structure[other]).sum(axis=1)).ravel()
            union = degree[i] + degree[other] - shared
            overlap = np.where(union > 0, shared / np.maximum(union, 1), 1.0)
            weights[i, j] = np.where(relations[i, j] >= 0, overlap, 0.0)
    return weights


def initial_layout(layers: Sequence[np.ndarray], graphs: Sequence[scipy.sparse.csr_matrix],
                   rng: np.random.RandomState) -> np.ndarray:
    """AlignedUMAP's start: each layer's spectral layout (umap-learn's ``spectral_layout``) scaled to
    ±10, each one's sign turned to agree with the previous layer's (the Procrustes step in 1-D).

    Shape: layers L × (n, D_i); returns float32 (L, n, 1).
    """
    from umap.spectral import spectral_layout  # noqa: PLC0415

    start = []
    for layer, graph in zip(layers, graphs):
        layout = spectral_layout(layer, graph, 1, rng)
        layout = (layout * (10.0 / np.abs(layout).max())).astype(np.float32)
        if start:
            u, _, v = np.linalg.svd(layout.T @ start[-1])
            layout = layout @ (u @ v)
        start.append(np.ascontiguousarray(layout, dtype=np.float32))
    return np.stack(start)


# ----------------------------------------------------------------------------------------- the SGD

_EPOCH = None


def _epoch_kernel():
    """umap-learn's aligned SGD epoch, compiled once per process (numba, cached on disk; no ``parallel``:
    the function has no parallel loop, so the flag only costs compile time)."""
    global _EPOCH  # noqa: PLW0603 - a compiled function, built on first use
    if _EPOCH is None:
        import numba  # noqa: PLC0415
        from umap.layouts import _optimize_layout_aligned_euclidean_single_epoch  # noqa: PLC0415

        _EPOCH = numba.njit(_optimize_layout_aligned_euclidean_single_epoch, fastmath=True, parallel=False,
                            cache=True)
    return _EPOCH


def _padded(rows: Sequence[np.ndarray], fill: float, dtype: type) -> np.ndarray:
    """Arrays of different lengths as the rows of one array, padded with ``fill``. Shape: (L, max length)."""
    out = np.full((len(rows), max(len(r) for r in rows)), fill, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def optimise_layout(start: np.ndarray, graphs: Sequence[scipy.sparse.csr_matrix], weights: np.ndarray,
                    relations: np.ndarray, n_epochs: int, a: float, b: float, alignment_regularisation: float,
                    seed: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """AlignedUMAP's joint SGD (``optimize_layout_aligned_euclidean`` with ``move_other``), with every
    layer's edges in padded arrays: a padded edge's next epoch is +∞, so it is never sampled.

    Shape: start (L, n, 1) float32 (updated in place and returned); weights, relations (L, W, n).
    """
    from umap.umap_ import make_epochs_per_sample  # noqa: PLC0415

    edges = [graph.tocoo() for graph in graphs]
    heads = _padded([e.row for e in edges], 0, np.int32)
    tails = _padded([e.col for e in edges], 0, np.int32)
    per_sample = [make_epochs_per_sample(e.data, n_epochs) for e in edges]
    epochs_per_sample = _padded(per_sample, np.inf, np.float64)
    per_negative = _padded([p.astype(np.float32) / NEGATIVE_SAMPLE_RATE for p in per_sample], np.inf, np.float32)
    next_negative = per_negative.copy()
    next_sample = _padded([p.astype(np.float32) for p in per_sample], np.inf, np.float32)
    epoch = _epoch_kernel()
    alpha = 1.0
    every = max(1, n_epochs // SGD_REPORTS)
    for n in range(n_epochs):
        epoch(start, start, heads, tails, epochs_per_sample, a, b, weights, relations, seed, REPULSION_STRENGTH,
              alignment_regularisation, start.shape[2], True, alpha, per_negative, next_negative, next_sample, n)
        alpha = 1.0 - n / float(n_epochs)
        if progress is not None and ((n + 1) % every == 0 or n + 1 == n_epochs):
            progress(n + 1)
    return start


def aligned_layout(layers: Sequence[np.ndarray], n_neighbors: int = 15, min_dist: float = 0.1,
                   n_epochs: int = 200, alignment_regularisation: float = 0.01, alignment_window_size: int = 3,
                   random_state: int = 0, progress: Progress | None = None) -> np.ndarray:
    """Aligned 1-D UMAP positions of the same n points in several layers (AlignedUMAP's fit with identity
    relations; see the module docstring). Points a layer's graph leaves without an edge are NaN there.

    ``progress(done, total, what)`` is called after each layer's graph, the start and each tenth of the
    epochs (``total`` = L + 1 + 10).

    Shape: layers L × (n, D_i) float32; returns (n, L) float32.
    """
    from umap.umap_ import INT32_MAX, INT32_MIN, find_ab_params  # noqa: PLC0415

    report = progress or (lambda done, total, what: None)
    total = len(layers) + 1 + SGD_REPORTS
    graphs = []
    for index, layer in enumerate(layers):
        graphs.append(fuzzy_graph(*nearest_neighbours(layer, n_neighbors), n_epochs))
        report(index + 1, total, f"neighbours of layer {index + 1} of {len(layers)}")
    relations = identity_relations(len(layers), len(layers[0]), alignment_window_size)
    weights = neighbourhood_overlap(graphs, relations)
    rng = np.random.RandomState(random_state)
    with warnings.catch_warnings(record=True) as caught:  # umap-learn warns of disconnected graphs and the like
        warnings.simplefilter("always")
        start = initial_layout(layers, graphs, rng)
    for message in sorted({str(w.message) for w in caught}):
        logger.info("umap-learn: %s", " ".join(message.split()))
    seed = rng.randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
    report(len(layers) + 1, total, "spectral start")
    a, b = find_ab_params(1.0, min_dist)
    every = max(1, n_epochs // SGD_REPORTS)
    positions = optimise_layout(
        start, graphs, weights, relations, n_epochs, float(a), float(b), alignment_regularisation, seed,
        lambda done: report(len(layers) + 1 + min(SGD_REPORTS, -(-done // every)), total,
                            f"SGD epoch {done} of {n_epochs}"))
    columns = positions[:, :, 0].T.copy()
    for index, graph in enumerate(graphs):
        columns[np.asarray(graph.sum(axis=1)).ravel() == 0, index] = np.nan
    return columns.astype(np.float32)


def warm_up() -> float:
    """Load (or, the first time on a machine, compile and cache) the numba code of the fit now, with a
    tiny fit on a synthetic stack, so that a progress report shows it as its own phase; returns the
    seconds it took (umap-learn's import included)."""
    started = time.perf_counter()
    line = np.linspace(0.0, 1.0, 24, dtype=np.float32)[:, None]  # a chain: a connected graph, a clean spectral start
    aligned_layout([line * np.float32([1.0, 2.0]), line ** 2], n_neighbors=5, n_epochs=10)
    return time.perf_counter() - started


class ActivationProfiles:
    """Aligned 1-D UMAP projections of several layers' activations (scikit-learn conventions).

    Args:
        n_neighbors: UMAP neighbourhood size (G-1); the background needs more images than this.
        min_dist: UMAP minimum distance (G-1).
        alignment_regularisation: weight λ of the pull toward a point's own position on neighbouring
            axes (G-2); 0 gives independent axes (only a sign flip aligns them).
        alignment_window_size: how many neighbouring axes each side pull (G-2).
        random_state: seed of UMAP's initialisation and SGD.
        n_epochs: SGD epochs of the fit (placement of new images runs a third of them).

    Attributes (after ``fit`` or ``from_embeddings``):
        embeddings_: the background's profiles, one column per layer; NaN where UMAP left an image
            disconnected on that axis (G-25: drop those from drawings and show the count).
        n_disconnected_: NaN count per layer.
        background_: the background activations, flattened to float32 (the reference for transform).

    Shape:
        embeddings_: (n, L) float32; n_disconnected_: (L,) int; background_: L × (n, D_i).
    """

    def __init__(self, n_neighbors: int = 15, min_dist: float = 0.1, alignment_regularisation: float = 0.01,
                 alignment_window_size: int = 3, random_state: int = 0, n_epochs: int = 200) -> None:
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.alignment_regularisation = alignment_regularisation
        self.alignment_window_size = alignment_window_size
        self.random_state = random_state
        self.n_epochs = n_epochs

    # ---------------------------------------------------------------------------------------- checks

    def _check_params(self) -> None:
        positive_int(self.n_neighbors, "n_neighbors", minimum=2)
        real(self.min_dist, "min_dist", 0.0, 1.0)
        real(self.alignment_regularisation, "alignment_regularisation", 0.0)
        positive_int(self.alignment_window_size, "alignment_window_size")
        positive_int(self.random_state, "random_state", minimum=0)
        positive_int(self.n_epochs, "n_epochs", minimum=10)

    def _check_background(self, background: Sequence[ArrayLike]) -> list[np.ndarray]:
        self._check_params()
        layers = layer_stack(background, "background")
        n = layers[0].shape[0]
        if n < self.n_neighbors + 1:
            raise ConfigError(f"the background holds {n} images but n_neighbors is {self.n_neighbors}: use at "
                              f"least {self.n_neighbors + 1} images or n_neighbors ≤ {max(2, n - 1)}")
        if n < RECOMMENDED_BACKGROUND:
            logger.warning("a background of %d images is below the %d that paper 002 (§6) found representative; "
                           "treat the class context as weak", n, RECOMMENDED_BACKGROUND)
        return layers

    @property
    def placement_params(self) -> PlacementParams:
        """The settings that decide where transform places a new image."""
        return PlacementParams(n_neighbors=self.n_neighbors, min_dist=self.min_dist, n_epochs=self.n_epochs,
                               transform_seed=42)

    # ------------------------------------------------------------------------------------------- fit

    def fit(self, background: Sequence[ArrayLike],
            progress: Callable[[int, int, str], None] | None = None) -> ActivationProfiles:
        """Fit the aligned axes on background activations (one matrix per layer, the same images).

        Args:
            background: L layers' activations of the same n images, each (n, D_i) or (n, C, H, W)
                (flattened per image, no pooling and no scaling: G-3, G-5).
            progress: called as ``progress(done, total, what)`` after each step (each layer's graph,
                the spectral start, each tenth of the SGD epochs: ``total`` = L + 11), e.g. to drive a
                progress bar.

        Raises:
            ConfigError: before any work, for unequal image counts, too few images for
                ``n_neighbors``, non-finite values or parameters out of range.
        """
        layers = self._check_background(background)
        logger.info("fitting aligned 1-D UMAP on %d background images × %d layers (%s values per image)",
                    layers[0].shape[0], len(layers), "/".join(str(a.shape[1]) for a in layers))
        embeddings = aligned_layout(layers, n_neighbors=self.n_neighbors, min_dist=self.min_dist,
                                    n_epochs=self.n_epochs, alignment_regularisation=self.alignment_regularisation,
                                    alignment_window_size=self.alignment_window_size,
                                    random_state=self.random_state, progress=progress)
        self._set_fit(layers, embeddings)
        return self

    @classmethod
    def from_embeddings(cls, background: Sequence[ArrayLike], embeddings: ArrayLike,
                        **params) -> ActivationProfiles:
        """A fitted object from a kept fit: the background activations and their profiles.

        ``params`` are the constructor's settings of the original fit (they decide how new images
        are placed). Shape: background L × (n, D_i); embeddings (n, L).
        """
        profiles = cls(**params)
        layers = profiles._check_background(background)
        positions = as_array(embeddings).astype(np.float32)
        if positions.shape != (layers[0].shape[0], len(layers)):
            raise ConfigError(f"embeddings have shape {positions.shape}, expected (n, L) = "
                              f"({layers[0].shape[0]}, {len(layers)}) for this background")
        if np.isinf(positions).any():
            raise ConfigError("embeddings hold infinite values; only NaN (a disconnected image) is allowed")
        if np.isnan(positions).all(axis=0).any():
            raise ConfigError("a layer's embedding is NaN for every image; refit the profiles")
        profiles._set_fit(layers, positions)
        return profiles

    def _set_fit(self, layers: list[np.ndarray], embeddings: np.ndarray) -> None:
        self.background_ = layers
        self.embeddings_ = embeddings
        self.n_disconnected_ = np.isnan(embeddings).sum(axis=0).astype(np.int64)
        if self.n_disconnected_.any():
            logger.warning("UMAP left %s background images disconnected (per layer); they have no position",
                           self.n_disconnected_.tolist())

    # ------------------------------------------------------------------------------------- transform

    @property
    def n_layers_(self) -> int:
        """Number of axes (layers) of the fit."""
        self._check_fitted()
        return len(self.background_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "embeddings_"):
            raise ConfigError("these activation profiles are not fitted: call fit(background) or "
                              "ActivationProfiles.from_embeddings(...) first")

    def transform(self, activations: Sequence[ArrayLike]) -> np.ndarray:
        """Profiles of new images on the fitted axes (each image placed on its own: no batch effect).

        Args:
            activations: the same layers as the background, each (m, D_i) or (m, C, H, W).

        Returns:
            (m, L) float32 positions on the background's axes.

        Raises:
            ConfigError: another layer count, another width per layer, non-finite values.
        """
        self._check_fitted()
        layers = layer_stack(activations, "activations")
        if len(layers) != len(self.background_):
            raise ConfigError(f"activations of {len(layers)} layers given, but the profiles were fitted on "
                              f"{len(self.background_)}")
        for index, (new, ref) in enumerate(zip(layers, self.background_)):
            if new.shape[1] != ref.shape[1]:
                raise ConfigError(f"activations[{index}] has {new.shape[1]} values per image, the fitted layer "
                                  f"{ref.shape[1]}: pass the same layers in the same order")
        params = self.placement_params
        columns = [place(new, ref, self.embeddings_[:, i], params)
                   for i, (new, ref) in enumerate(zip(layers, self.background_))]
        return np.stack(columns, axis=1).astype(np.float32)
