"""The raw-space check of a pair's diverging point (spec-002 §1.6) with the background's norms kept.

:func:`advlens.profiles.diverging_point` computes the same quantities from scratch, converting the whole
background of every layer to float64 for each image (seconds per pair for 2,000 flattened conv maps).
Here each layer's squared row norms are computed once per session and the pair's distances to the
background come from one float32 matrix product, so a new pair costs milliseconds; the values agree with
:func:`~advlens.profiles.diverging_point` (tests/test_profiles_analysis.py compares them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RAW_NEIGHBOURS = 15


def squared_norms(background: np.ndarray, block: int = 256) -> np.ndarray:
    """Each background row's squared Euclidean norm, in float64, ``block`` rows at a time.

    Shape: background (n, D) → (n,).
    """
    return np.concatenate([np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
                           for rows in (background[s:s + block].astype(np.float64)
                                        for s in range(0, len(background), block))]) if len(background) else np.zeros(0)


def majority(labels: np.ndarray) -> int:
    """The most frequent label, ties going to the label met first (the nearest neighbour's among them)."""
    votes: dict = {}
    for label in labels:
        votes[label] = votes.get(label, 0) + 1
    best = max(votes.values())
    return int(next(label for label in labels if votes[label] == best))


@dataclass(frozen=True)
class RawCheck:
    """Per layer: each image's majority label among its nearest background neighbours, the pair's raw
    distance over the median background distance, and its cosine distance. Shape: each (L,)."""

    affinity_a: np.ndarray
    affinity_b: np.ndarray
    distance: np.ndarray
    cosine: np.ndarray


def raw_check(pair_a: list[np.ndarray], pair_b: list[np.ndarray], background: list[np.ndarray],
              norms: list[np.ndarray], labels: np.ndarray, scales: np.ndarray,
              neighbours: int = RAW_NEIGHBOURS) -> RawCheck:
    """The raw-space evidence of each layer for a pair (a: benign, b: adversarial).

    Args:
        pair_a, pair_b: the pair's outputs, one array per layer (any shape; flattened).
        background: the background's outputs per layer, (n, …) float32.
        norms: :func:`squared_norms` of each background layer (flattened).
        labels: the background's labels the neighbours vote with.
        scales: the median pairwise background distance of each layer.
    """
    affinity_a, affinity_b, distance, cosine = [], [], [], []
    for a, b, reference, norm, scale in zip(pair_a, pair_b, background, norms, scales):
        flat = reference.reshape(len(reference), -1)
        x = np.stack([a.reshape(-1), b.reshape(-1)]).astype(np.float32)
        dots = (flat @ x.T).astype(np.float64)  # (n, 2), float32 BLAS: no float64 copy of the background
        own = (x.astype(np.float64) ** 2).sum(axis=1)
        dist = np.sqrt(np.maximum(norm[:, None] + own[None, :] - 2.0 * dots, 0.0))
        k = min(neighbours, len(flat))
        for column, out in ((0, affinity_a), (1, affinity_b)):
            nearest = np.argsort(dist[:, column], kind="stable")[:k]
            out.append(majority(labels[nearest]))
        a64, b64 = x[0].astype(np.float64), x[1].astype(np.float64)
        distance.append(float(np.linalg.norm(a64 - b64)) / scale)
        product = float(np.linalg.norm(a64) * np.linalg.norm(b64))
        cosine.append((0.0 if not (a64.any() or b64.any()) else 1.0) if product == 0
                      else 1.0 - float(a64 @ b64) / product)
    return RawCheck(np.array(affinity_a), np.array(affinity_b), np.array(distance), np.array(cosine))
