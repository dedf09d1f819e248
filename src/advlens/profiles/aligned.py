"""Activation profiles: one aligned 1-D UMAP axis per layer (paper 002 §4.3; spec-002 §1.3).

Each image's activation profile is its position on every selected layer's axis. The axes come from
umap-learn's ``AlignedUMAP`` fitted on background activations only, with identity relations (the same
images in every layer) so that clusters keep their places from axis to axis and a change between layers
shows as movement. New images (the foreground pair) are placed on the fitted axes by UMAP's transform
against the fixed background positions (:mod:`advlens.profiles.placement`), which needs the background
activations and positions only: a fit kept in a store is restored with :meth:`ActivationProfiles.from_embeddings`
and places new images without refitting (refits are not reproducible bit for bit, spec-002 §5).

Below 4,096 background images the fit gives AlignedUMAP the exact Euclidean distances of each layer
(``metric="precomputed"``): the same neighbourhood graphs UMAP builds itself at that size, computed
faster (:func:`self_distances`).

The vertical position carries no meaning of its own: only distances along an axis and the positions of
the background groups do (paper 002 §6).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from advlens.errors import ConfigError
from advlens.profiles._arrays import ArrayLike, as_array, euclidean, layer_stack, positive_int, real
from advlens.profiles.placement import PlacementParams, place

logger = logging.getLogger(__name__)

PRECOMPUTE_BELOW = 4096
"""Backgrounds smaller than this get exact distance matrices (UMAP's own exact-kNN limit); larger ones
(n² floats per layer) let UMAP find approximate neighbours itself."""
RECOMMENDED_BACKGROUND = 1000
"""Below this many background images profiles may not be representative (paper 002 §6; G-26)."""


def self_distances(layer: np.ndarray) -> np.ndarray:
    """All pairwise Euclidean distances of one layer's background, float32 with an exact zero diagonal.

    UMAP computes exact distances below 4,096 images anyway; given with ``metric="precomputed"`` they
    come from BLAS instead of one numba call per pair through scikit-learn (about 3× faster on
    flattened conv maps of 6,272 values, and the widest default layer has 25,088). Shape: (n, D) → (n, n).
    """
    distances = euclidean(layer, layer).astype(np.float32)
    np.fill_diagonal(distances, 0.0)
    return distances


def warm_up() -> float:
    """Compile umap-learn's numba code for the fit now (a small fit on a synthetic stack), so that a
    progress report can show the compilation as its own phase; returns the seconds it took."""
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    stack = [rng.normal(size=(40, 4)).astype(np.float32) for _ in range(2)]
    level = logger.level
    logger.setLevel(logging.ERROR)  # the tiny background's warning is not the user's
    try:
        ActivationProfiles(n_neighbors=5, n_epochs=10).fit(stack)
    finally:
        logger.setLevel(level)
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
        aligned_umap_: the fitted ``umap.AlignedUMAP`` (``None`` for a restored fit).

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
            progress: called as ``progress(done, total, what)`` after each step (one distance matrix
                per layer, then the aligned fit: ``total`` = L + 1), e.g. to drive a progress bar.

        Raises:
            ConfigError: before any work, for unequal image counts, too few images for
                ``n_neighbors``, non-finite values or parameters out of range.
        """
        layers = self._check_background(background)
        n = layers[0].shape[0]
        logger.info("fitting aligned 1-D UMAP on %d background images × %d layers (%s values per image)",
                    n, len(layers), "/".join(str(a.shape[1]) for a in layers))
        import umap  # noqa: PLC0415 - umap-learn's import compiles numba code: pay for it only when fitting

        exact = n < PRECOMPUTE_BELOW
        total = len(layers) + 1
        inputs = []
        for index, layer in enumerate(layers):
            inputs.append(self_distances(layer) if exact else layer)
            if progress is not None:
                progress(index + 1, total, f"distances of layer {index + 1} of {len(layers)}")
        metric = "precomputed" if exact else "euclidean"
        aligned = umap.AlignedUMAP(
            n_components=1, n_neighbors=self.n_neighbors, min_dist=self.min_dist, metric=metric,
            n_epochs=self.n_epochs, alignment_regularisation=self.alignment_regularisation,
            alignment_window_size=self.alignment_window_size, random_state=self.random_state)
        identity = {k: k for k in range(n)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if len(layers) == 1:  # AlignedUMAP needs two layers; one axis is a plain UMAP
                single = umap.UMAP(n_components=1, n_neighbors=self.n_neighbors, min_dist=self.min_dist,
                                   metric=metric, n_epochs=self.n_epochs,
                                   random_state=self.random_state).fit(inputs[0])
                columns = [single.embedding_[:, 0]]
                aligned = None
            else:
                aligned.fit(inputs, relations=[identity] * (len(layers) - 1))
                columns = [e[:, 0] for e in aligned.embeddings_]
        for message in sorted({str(w.message) for w in caught}):
            logger.info("umap-learn: %s", message)
        if progress is not None:
            progress(total, total, "aligned UMAP fit")
        self._set_fit(layers, np.stack(columns, axis=1).astype(np.float32), aligned)
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
        profiles._set_fit(layers, positions, None)
        return profiles

    def _set_fit(self, layers: list[np.ndarray], embeddings: np.ndarray, aligned) -> None:
        self.background_ = layers
        self.embeddings_ = embeddings
        self.n_disconnected_ = np.isnan(embeddings).sum(axis=0).astype(np.int64)
        self.aligned_umap_ = aligned
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
